-- xiaoer store schema, version 8: agents' commands across instances (only a shared PostgreSQL
-- store uses it; the table is here so that the two schemas stay in step).
CREATE TABLE agent_commands (
    id            INTEGER PRIMARY KEY,
    platform      TEXT    NOT NULL,
    self_id       TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    escalation_id INTEGER,
    body          TEXT,
    queue         TEXT,
    to_agent      TEXT,
    created_ms    INTEGER NOT NULL,
    requested_by  TEXT    NOT NULL,
    taken_by      TEXT,
    done_ms       INTEGER,
    outcome       TEXT,
    result        TEXT
);
CREATE INDEX agent_commands_pending ON agent_commands (platform, self_id) WHERE done_ms IS NULL;
