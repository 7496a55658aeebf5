-- xiaoer store schema, version 6 (PostgreSQL; mirrors migrations/sqlite/0006_hours.sql):
-- business hours. The closed period (named by its start, unix ms) whose off-hours notice a chat
-- has had, so that the notice goes out once per closed period, also across restarts.
ALTER TABLE conversations ADD COLUMN off_hours_notice_ms BIGINT;
