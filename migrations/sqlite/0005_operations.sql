-- xiaoer store schema, version 5: operations — what decided each message, the notification
-- outbox, and the platform response clock.

-- What routing decided for an inbound buyer message (NULL on other lines): the shift report
-- groups by these, and finds the rules that never fire.
ALTER TABLE transcript ADD COLUMN action TEXT;       -- reply | escalate | fallback | ignore
ALTER TABLE transcript ADD COLUMN topic TEXT;
ALTER TABLE transcript ADD COLUMN rule TEXT;
ALTER TABLE transcript ADD COLUMN decided_by TEXT;   -- rule | model | fallback | state

-- Notifications to deliver, written in the same transaction as the event that causes them.
-- `key` is the idempotency key receivers see; it is the same on every retry and unique, so an
-- event noticed twice (an SLA warning found again after a restart) is stored once.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY,
    key           TEXT   NOT NULL UNIQUE,
    event         TEXT   NOT NULL,       -- escalation.created | escalation.raised | sla.warning | sla.breach | clock.warning
    platform      TEXT   NOT NULL,
    self_id       TEXT   NOT NULL,
    user_id       TEXT   NOT NULL,
    queue         TEXT   NOT NULL,
    escalation_id BIGINT,
    first_message TEXT   NOT NULL,
    detail        TEXT   NOT NULL DEFAULT '',
    at_ms         BIGINT NOT NULL,
    -- 0 until the deliverer has made one delivery row per target that wants the event.
    fanned_out    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_unfanned ON outbox (fanned_out, id);

-- One notification to one target, and what became of it.
CREATE TABLE outbox_deliveries (
    outbox_id       BIGINT NOT NULL,
    target          TEXT   NOT NULL,     -- the target's name from [[notify]]
    state           TEXT   NOT NULL,     -- pending | delivered | dead
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT,
    done_ms         BIGINT,
    PRIMARY KEY (outbox_id, target)
);
CREATE INDEX outbox_deliveries_due ON outbox_deliveries (state, next_attempt_ms);

-- The platform response clock: one round per buyer wait, from the first unanswered buyer
-- message to the first reply that counts. `counted_ms` is the wait as the shop's platform counts
-- it (inside counted hours, capped); `outcome` is in_time | late, NULL while the round is open.
CREATE TABLE response_rounds (
    id          INTEGER PRIMARY KEY,
    platform    TEXT   NOT NULL,
    self_id     TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    started_ms  BIGINT NOT NULL,
    budget_ms   BIGINT NOT NULL,
    answered_ms BIGINT,
    answered_by TEXT,                    -- bot | agent:<name> | shop
    counted_ms  BIGINT,
    outcome     TEXT,
    warned_pct  BIGINT NOT NULL DEFAULT 0  -- the highest budget share already warned about
);
CREATE INDEX response_rounds_by_conversation ON response_rounds (platform, self_id, user_id, started_ms);
CREATE UNIQUE INDEX response_rounds_one_open_per_conversation
    ON response_rounds (platform, self_id, user_id) WHERE outcome IS NULL;
