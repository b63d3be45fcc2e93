-- Subscriptions to cases, per-member alert preferences, and fan-outs (broadcasts and case
-- alerts) that stream their recipients into the outbox in chunks. Times are UTC epoch seconds.

-- case_id 0 means "every case this member may see" (/subscribe all), now and in future.
-- mode 'off' on a single case overrides an "all" subscription (/unsubscribe SLUG while following
-- all). No foreign key on case_id because of the 0 row; a trigger removes rows of deleted cases.
CREATE TABLE subscriptions (
    case_id     INTEGER NOT NULL,
    member_id   INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    mode        TEXT NOT NULL DEFAULT 'instant' CHECK (mode IN ('instant', 'digest', 'off')),
    created_at  REAL NOT NULL,
    PRIMARY KEY (case_id, member_id)
) WITHOUT ROWID;
CREATE INDEX subscriptions_member ON subscriptions(member_id);

CREATE TRIGGER subscriptions_case_deleted AFTER DELETE ON cases BEGIN
    DELETE FROM subscriptions WHERE case_id = OLD.id;
END;

-- Alert preferences: distressing categories the member does not want (comma list), the local
-- hour of the daily digest, and when the next digest is due (NULL: no digest subscription).
CREATE TABLE subscriber_prefs (
    member_id       INTEGER PRIMARY KEY REFERENCES members(id) ON DELETE CASCADE,
    optouts         TEXT NOT NULL DEFAULT '',
    digest_hour     INTEGER NOT NULL DEFAULT 9 CHECK (digest_hour BETWEEN 0 AND 23),
    next_digest_at  REAL,
    last_digest_at  REAL
);
CREATE INDEX subscriber_prefs_digest ON subscriber_prefs(next_digest_at)
    WHERE next_digest_at IS NOT NULL;

-- A fan-out: one message to many members, materialised into outbox rows in chunks ordered by
-- member id (`cursor` = last member id done), so 100,000 recipients are never held in memory.
--   kind 'broadcast': /broadcast SEGMENT TEXT, draft until /confirm, progress to the author.
--   kind 'alert': a published case update going to the case's subscribers.
-- segment: 'all' | 'case:<id>' | 'role:<role>' | 'lang:<code>' | 'subs:<case id>' (alerts).
-- body: JSON with the text and, for alerts, the update kind and distressing categories.
CREATE TABLE broadcasts (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('broadcast', 'alert')),
    state           TEXT NOT NULL DEFAULT 'draft'
                    CHECK (state IN ('draft', 'running', 'done', 'cancelled', 'expired')),
    segment         TEXT NOT NULL,
    body            TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    author_id       INTEGER REFERENCES members(id) ON DELETE SET NULL,
    case_id         INTEGER,
    update_id       INTEGER,
    expected        INTEGER NOT NULL DEFAULT 0,   -- messages foreseen at confirmation
    cursor          INTEGER NOT NULL DEFAULT 0,
    exhausted       INTEGER NOT NULL DEFAULT 0,   -- every recipient has an outbox row
    -- Message counts kept by storage/outbox.py in the same transaction as each state change,
    -- so progress never counts rows: written, and how many ended sent/failed/maybe/cancelled.
    materialised    INTEGER NOT NULL DEFAULT 0,
    sent_count      INTEGER NOT NULL DEFAULT 0,
    failed_count    INTEGER NOT NULL DEFAULT 0,
    maybe_count     INTEGER NOT NULL DEFAULT 0,
    cancelled_count INTEGER NOT NULL DEFAULT 0,
    progress_transport TEXT,                      -- where the author follows progress
    progress_chat   TEXT,
    progress_id     INTEGER,                      -- outbox id of the message edited in place
    progress_edit_id INTEGER,                     -- the latest edit row (coalesced while pending)
    progress_text   TEXT,                         -- counts last shown, to skip empty edits
    progress_at     REAL NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL                          -- set once the final summary is written
);
CREATE INDEX broadcasts_active ON broadcasts(state) WHERE state IN ('draft', 'running', 'cancelled');
CREATE UNIQUE INDEX broadcasts_update ON broadcasts(update_id) WHERE update_id IS NOT NULL;
CREATE INDEX broadcasts_alerts ON broadcasts(case_id, created_at) WHERE kind = 'alert';

-- Outbox engine indexes. Due rows are claimed per priority in not_before order, so rows held
-- for quiet hours (not_before in the future) are never scanned by a claim. Every index costs
-- writes on each state change of every message, so large ones are few: a fan-out's pending
-- rows (cancel, rows held for quiet hours) have a partial index that a row leaves when it is
-- claimed; `outbox_sending` (001) stays, tiny (rows in flight) and it spares the start-up a
-- scan of the whole outbox.
DROP INDEX IF EXISTS outbox_pending;
CREATE INDEX outbox_due ON outbox(transport, priority, not_before, id) WHERE state = 'pending';
CREATE INDEX outbox_fanout_pending ON outbox(broadcast_id, not_before)
    WHERE state = 'pending' AND broadcast_id IS NOT NULL;
