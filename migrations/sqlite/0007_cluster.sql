-- xiaoer store schema, version 7: several instances sharing the shops of one store. Only a
-- PostgreSQL store is shared (one daemon holds a SQLite store, by its lock file); the tables
-- are here too so that the two schemas stay in step, table for table and column for column.

-- Every instance that has served this store, with a heartbeat.
CREATE TABLE instances (
    id         TEXT    PRIMARY KEY,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    seen_ms    INTEGER NOT NULL,
    stopped_ms INTEGER
);

-- Which instance answers each shop account, until when, and under which epoch.
CREATE TABLE shop_leases (
    platform   TEXT    NOT NULL,
    self_id    TEXT    NOT NULL,
    owner      TEXT,
    epoch      INTEGER NOT NULL DEFAULT 0,
    expires_ms INTEGER NOT NULL DEFAULT 0,
    taken_ms   INTEGER,
    PRIMARY KEY (platform, self_id)
);
CREATE INDEX shop_leases_by_owner ON shop_leases (owner);

-- Every buyer message any instance received, one row per message id.
CREATE TABLE inbound_backlog (
    seq         INTEGER NOT NULL,
    platform    TEXT    NOT NULL,
    self_id     TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    parts       TEXT,
    received_ms INTEGER NOT NULL,
    received_by TEXT    NOT NULL,
    PRIMARY KEY (platform, self_id, user_id, message_id)
);
CREATE INDEX inbound_backlog_by_shop ON inbound_backlog (platform, self_id, received_ms);
