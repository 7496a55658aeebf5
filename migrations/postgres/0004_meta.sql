-- xiaoer store schema, version 4 (PostgreSQL; mirrors migrations/sqlite/0004_meta.sql): a place
-- for the store's own facts. Writing the start time at every start proves the database is
-- writable before the daemon takes any message.
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
