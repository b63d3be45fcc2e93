-- Cases (Amnesty-style case sheets) and family well-being reports. Times are UTC epoch seconds.
--
-- What is plaintext here (inside SQLCipher) and what is sealed: report bodies and attachments
-- are HPKE-sealed to the network's sealing public key (`reports.sealed`,
-- `report_attachments.sealed`); the server cannot open them. Only listing metadata stays
-- queryable: case, time, source, kind of contact, health level, urgency, attachment count.
-- Reports carry no reporter id: who sent a report is not kept in the archive.

-- The case sheet. Text fields are NULL when unknown.
ALTER TABLE cases ADD COLUMN country TEXT;
ALTER TABLE cases ADD COLUMN detained_since TEXT;          -- ISO date: YYYY, YYYY-MM or YYYY-MM-DD
ALTER TABLE cases ADD COLUMN charges TEXT;
ALTER TABLE cases ADD COLUMN facility TEXT;                -- current place; history below
ALTER TABLE cases ADD COLUMN status TEXT NOT NULL DEFAULT 'detained'
    CHECK (status IN ('detained', 'awaiting_trial', 'sentenced', 'transferred', 'missing',
                      'released'));
ALTER TABLE cases ADD COLUMN next_hearing REAL;            -- UTC epoch seconds
ALTER TABLE cases ADD COLUMN next_hearing_all_day INTEGER NOT NULL DEFAULT 0;  -- date known, time not
ALTER TABLE cases ADD COLUMN letters_address TEXT;
ALTER TABLE cases ADD COLUMN summary TEXT;
ALTER TABLE cases ADD COLUMN tags TEXT;                    -- comma-separated, lower case
ALTER TABLE cases ADD COLUMN how_to_help TEXT;
ALTER TABLE cases ADD COLUMN updated_at REAL;
-- "Not forgotten": days of silence before coordinators are told and relatives gently asked
-- (0 = off). The silence is counted from the last report (or the case's creation); the round
-- already announced is kept so a prompt goes out once per silence period.
ALTER TABLE cases ADD COLUMN checkin_days INTEGER NOT NULL DEFAULT 14
    CHECK (checkin_days BETWEEN 0 AND 365);
ALTER TABLE cases ADD COLUMN last_report_at REAL;
ALTER TABLE cases ADD COLUMN checkin_round INTEGER NOT NULL DEFAULT 0;

-- Public case updates ("Further Information" in Amnesty's terms): written by coordinators
-- (/update, /publish). The only way family content reaches supporters is /publish, after
-- review. `kind` is one of storage.cases.UPDATE_KINDS and `flags` of UPDATE_FLAGS (checked
-- in code, so the alerting capability may add some without a migration).
CREATE TABLE case_updates (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL DEFAULT 'general',
    flags       TEXT NOT NULL DEFAULT '',          -- comma list: torture, health, urgent
    text        TEXT NOT NULL,
    report_id   INTEGER REFERENCES reports(id) ON DELETE SET NULL,
    author_id   INTEGER REFERENCES members(id) ON DELETE SET NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX case_updates_case ON case_updates(case_id, created_at);

-- Where the prisoner has been held: one row per place, newest last (transfers).
CREATE TABLE case_facilities (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    facility    TEXT NOT NULL,
    since       REAL NOT NULL,
    recorded_by INTEGER REFERENCES members(id) ON DELETE SET NULL
);
CREATE INDEX case_facilities_case ON case_facilities(case_id, since);

-- Reports: sealed body (JSON of every wizard answer and the free text) plus metadata.
-- key_id is the fingerprint of the public key the body was sealed to (keys can be replaced).
CREATE TABLE reports (
    id            INTEGER PRIMARY KEY,
    case_id       INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    created_at    REAL NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('wizard', 'line', 'urgent')),
    kind          TEXT CHECK (kind IN ('visit', 'call', 'letter', 'lawyer', 'other')),
    health        TEXT CHECK (health IN ('ok', 'concern', 'critical')),
    urgent        INTEGER NOT NULL DEFAULT 0,
    attachments   INTEGER NOT NULL DEFAULT 0,
    key_id        TEXT NOT NULL,
    sealed        BLOB NOT NULL,
    published_update_id INTEGER
);
CREATE INDEX reports_case ON reports(case_id, created_at);

-- Photos and documents, each sealed on its own (name, type and bytes inside the seal).
CREATE TABLE report_attachments (
    id          INTEGER PRIMARY KEY,
    report_id   INTEGER NOT NULL REFERENCES reports(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('photo', 'document')),
    key_id      TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX report_attachments_report ON report_attachments(report_id);

-- /urgent: pushed to every coordinator of the case and re-sent until one acknowledges (/ack).
-- reporter_id lets the relative hear that someone has seen it; it is cleared at the ack.
-- report_id is NULL when the network had no sealing key (alert delivered, nothing archived).
CREATE TABLE urgent_alerts (
    id            INTEGER PRIMARY KEY,
    case_id       INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    report_id     INTEGER REFERENCES reports(id) ON DELETE SET NULL,
    reporter_id   INTEGER REFERENCES members(id) ON DELETE SET NULL,
    created_at    REAL NOT NULL,
    last_sent_at  REAL NOT NULL,
    sends         INTEGER NOT NULL DEFAULT 1,
    acked_at      REAL,
    acked_by      INTEGER REFERENCES members(id) ON DELETE SET NULL,
    expired_at    REAL
);
CREATE INDEX urgent_alerts_open ON urgent_alerts(last_sent_at)
    WHERE acked_at IS NULL AND expired_at IS NULL;

-- A relative's unfinished report. `data` is AES-GCM under a key that exists only in the
-- running process's memory, so a seized disk holds no draft text, and a restart discards
-- unfinished drafts. The `conversations` row (flow 'report') only routes typed text here.
CREATE TABLE report_drafts (
    member_id   INTEGER PRIMARY KEY REFERENCES members(id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL CHECK (purpose IN ('wizard', 'line', 'urgent', 'more')),
    step        TEXT NOT NULL,
    data        BLOB NOT NULL,
    detached    INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL
);
CREATE INDEX report_drafts_detached ON report_drafts(member_id) WHERE detached = 1;

-- A draft lives exactly as long as its conversation. Wizard buttons ("/r kind visit", "/skip")
-- are commands that keep the flow; any other command (/cancel, /help, another wizard, the
-- stale-wizard purge) ends the conversation, which marks the draft detached, and the next
-- message the router records drops it.
CREATE TRIGGER report_drafts_detach AFTER DELETE ON conversations
WHEN old.flow = 'report'
BEGIN
    UPDATE report_drafts SET detached = 1 WHERE member_id = old.member_id;
END;

CREATE TRIGGER report_drafts_abandon AFTER INSERT ON inbox
BEGIN
    DELETE FROM report_drafts WHERE detached = 1;
END;
