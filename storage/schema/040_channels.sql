-- Second wave, trust between channels (THREATS rules 9-11, 14).
-- Every outgoing message carries a sensitivity class: report, urgent, code, place or ordinary.
-- Rows of a class other than ordinary are deleted once final (storage/outbox.py scrub_final):
-- a copy of the database then holds neither their words nor whom they went to.
ALTER TABLE outbox ADD COLUMN sensitivity TEXT NOT NULL DEFAULT 'ordinary';
CREATE INDEX outbox_sensitive ON outbox(id) WHERE sensitivity != 'ordinary';

-- A member may have one identity per transport. `preferred` marks the one they wrote from last
-- (a flag, not a time: no last-seen stamp that could be joined to a report's time).
-- `quarantined`: the Signal safety number changed; nothing sensitive goes there until /trust.
ALTER TABLE identities ADD COLUMN preferred INTEGER NOT NULL DEFAULT 0;
ALTER TABLE identities ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0;
UPDATE identities SET preferred = 1;

-- /link: a one-time code, stored only as a keyed hash, valid 10 minutes.
CREATE TABLE link_codes (
    code_hash   TEXT PRIMARY KEY,
    member_id   INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    transport   TEXT NOT NULL,
    expires_at  REAL NOT NULL
) WITHOUT ROWID;

-- Messages from a quarantined identity, held unprocessed until a coordinator confirms the
-- member in person (/trust) or the member is dropped; deleted (and scrubbed) either way.
CREATE TABLE held_messages (
    id          INTEGER PRIMARY KEY,
    transport   TEXT NOT NULL,
    address     TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE INDEX held_messages_sender ON held_messages(transport, address);
