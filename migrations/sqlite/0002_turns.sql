-- xiaoer store schema, version 2: one atomic write per handled message.
--
-- `version` makes every conversation write conditional on the state it was planned from, so a
-- claim written by another process (`xiaoer queue claim`) is never overwritten by a chat worker
-- that read the conversation before it; the worker re-reads and plans again.
ALTER TABLE conversations ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
-- Idleness of a chat an agent holds is measured from the last message of either side.
ALTER TABLE conversations ADD COLUMN last_buyer_ms BIGINT;
ALTER TABLE conversations ADD COLUMN last_staff_ms BIGINT;
-- The product card the buyer sent last, so a question after it can be answered about the item.
ALTER TABLE conversations ADD COLUMN last_item_id TEXT;
ALTER TABLE conversations ADD COLUMN last_item_title TEXT;

-- Outbound lines are written before they are sent (`pending`) and marked afterwards: `sent`,
-- `failed` (the gateway refused; the buyer did not get it) or `unknown` (timed out or the
-- connection dropped after the write; it may have arrived). NULL for inbound lines.
ALTER TABLE transcript ADD COLUMN delivery TEXT;
-- Non-text parts of a message (product and order cards, images, stickers), as JSON.
ALTER TABLE transcript ADD COLUMN parts TEXT;

ALTER TABLE escalations ADD COLUMN outcome TEXT;

-- What happened to each escalation, in order: opened, raised, claimed, released, transferred,
-- closed. The console's timeline and the shift report read it.
CREATE TABLE escalation_events (
    id            INTEGER PRIMARY KEY,
    escalation_id BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    queue         TEXT   NOT NULL,         -- the queue after the event
    actor         TEXT   NOT NULL,
    detail        TEXT   NOT NULL,
    at_ms         BIGINT NOT NULL
);
CREATE INDEX escalation_events_by_escalation ON escalation_events (escalation_id, id);
