-- xiaoer store schema, version 3: the agent console.

-- People who work escalated chats. `shops` is a space-separated list of shop account ids the
-- agent serves; empty means every shop.
CREATE TABLE agents (
    name          TEXT    PRIMARY KEY,
    password_hash TEXT    NOT NULL,      -- argon2id, PHC string
    role          TEXT    NOT NULL,      -- agent | supervisor | admin
    shops         TEXT    NOT NULL DEFAULT '',
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_ms    BIGINT  NOT NULL
);

-- Console sessions. Only a hash of the token is kept, so a copy of the database opens no
-- session.
CREATE TABLE sessions (
    token_hash   TEXT   PRIMARY KEY,
    agent        TEXT   NOT NULL,
    csrf         TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL
);
CREATE INDEX sessions_by_agent ON sessions (agent);

-- Internal notes and shift-handover notes on a chat; never sent to the buyer.
CREATE TABLE notes (
    id            INTEGER PRIMARY KEY,
    platform      TEXT   NOT NULL,
    self_id       TEXT   NOT NULL,
    user_id       TEXT   NOT NULL,
    escalation_id BIGINT,
    author        TEXT   NOT NULL,
    kind          TEXT   NOT NULL,       -- note | handover
    body          TEXT   NOT NULL,
    at_ms         BIGINT NOT NULL
);
CREATE INDEX notes_by_conversation ON notes (platform, self_id, user_id, at_ms);

-- An agent's own quick phrases (the shop-wide ones live in the reply files).
CREATE TABLE quick_phrases (
    id         INTEGER PRIMARY KEY,
    agent      TEXT   NOT NULL,
    text       TEXT   NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX quick_phrases_by_agent ON quick_phrases (agent, id);

ALTER TABLE escalations ADD COLUMN closed_note TEXT;
