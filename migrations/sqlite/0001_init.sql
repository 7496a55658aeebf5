-- xiaoer store schema, version 1.
--
-- Kept close to portable SQL so the PostgreSQL migrations can mirror it: plain TEXT/BIGINT
-- columns, timestamps as integer unix milliseconds, booleans as 0/1 integers. The only
-- SQLite-specific spelling is `INTEGER PRIMARY KEY` for generated ids (PostgreSQL: BIGSERIAL or
-- `BIGINT GENERATED ALWAYS AS IDENTITY`).

-- One row per conversation (platform, bot account, buyer).
CREATE TABLE conversations (
    platform           TEXT    NOT NULL,
    self_id            TEXT    NOT NULL,
    user_id            TEXT    NOT NULL,
    state              TEXT    NOT NULL,   -- bot | queued | human | paused
    state_since_ms     BIGINT  NOT NULL,
    paused_until_ms    BIGINT,
    greeted_at_ms      BIGINT,
    fallback_streak    BIGINT  NOT NULL DEFAULT 0,
    queued_notice_sent INTEGER NOT NULL DEFAULT 0,
    open_escalation    BIGINT,
    PRIMARY KEY (platform, self_id, user_id)
);

-- Every inbound message id seen, so a redelivered event is recognised after a restart.
CREATE TABLE inbound_messages (
    platform   TEXT   NOT NULL,
    self_id    TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    message_id TEXT   NOT NULL,
    at_ms      BIGINT NOT NULL,
    PRIMARY KEY (platform, self_id, user_id, message_id)
);

-- What was said, in both directions.
CREATE TABLE transcript (
    id         INTEGER PRIMARY KEY,
    platform   TEXT   NOT NULL,
    self_id    TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    direction  TEXT   NOT NULL,            -- inbound | outbound
    sender     TEXT   NOT NULL,            -- buyer | bot | agent:<name> | shop
    message_id TEXT,
    body       TEXT   NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX transcript_by_conversation ON transcript (platform, self_id, user_id, at_ms);

-- Chats handed to a human queue.
CREATE TABLE escalations (
    id            INTEGER PRIMARY KEY,
    platform      TEXT   NOT NULL,
    self_id       TEXT   NOT NULL,
    user_id       TEXT   NOT NULL,
    queue         TEXT   NOT NULL,
    reason        TEXT   NOT NULL,
    rule          TEXT,
    state         TEXT   NOT NULL,         -- open | claimed | closed
    created_ms    BIGINT NOT NULL,
    claimed_by    TEXT,
    claimed_ms    BIGINT,
    closed_by     TEXT,
    closed_ms     BIGINT,
    first_message TEXT   NOT NULL
);
CREATE INDEX escalations_by_state ON escalations (state, created_ms);
-- At most one escalation per conversation that is not closed.
CREATE UNIQUE INDEX escalations_one_live_per_conversation
    ON escalations (platform, self_id, user_id) WHERE state <> 'closed';

-- Who moved a conversation from which state to which, and why.
CREATE TABLE state_changes (
    id         INTEGER PRIMARY KEY,
    platform   TEXT   NOT NULL,
    self_id    TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    from_state TEXT,                       -- NULL for a conversation's first recorded state
    to_state   TEXT   NOT NULL,
    actor      TEXT   NOT NULL,            -- bot | buyer | agent:<name> | shop | timeout | system
    reason     TEXT   NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX state_changes_by_conversation ON state_changes (platform, self_id, user_id, at_ms);
