-- Solidarity actions: schedules, their occurrences, reminders, RSVPs; and the letters tally.
-- Times are UTC epoch seconds. The rule is the source of truth for when an action happens; the
-- occurrences (and each occurrence's reminders) are materialised from it a little ahead of time
-- by handlers/actions.py, and APScheduler only wakes the process at the next due row.

-- An action: one-off (rule 'once', start in once_at) or recurring (bot.recurrence rule text,
-- read in `timezone`). title NULL: a built-in action (court hearing, 30 October) whose title is
-- rendered in each member's language. audience: 'case' (the case's followers, relatives and
-- coordinators), 'all', or 'role:<role>'. reminders: offsets in seconds before the start; the
-- largest goes to the whole audience (the invitation), the others to those who joined.
-- exact_place is never shown in listings: it goes to those who joined, reveal_before seconds
-- before the start.
CREATE TABLE actions (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL
                  CHECK (kind IN ('vigil', 'protest', 'hearing', 'letters', 'callin', 'online',
                                  'other')),
    title         TEXT,
    case_id       INTEGER REFERENCES cases(id) ON DELETE CASCADE,
    rule          TEXT NOT NULL,
    timezone      TEXT NOT NULL,
    once_at       REAL,
    all_day       INTEGER NOT NULL DEFAULT 0,   -- the date is known, the time is not
    place         TEXT,
    exact_place   TEXT,
    reveal_before INTEGER,
    audience      TEXT NOT NULL DEFAULT 'all',
    reminders     TEXT NOT NULL DEFAULT '86400,3600',
    state         TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'ended', 'cancelled')),
    origin        TEXT NOT NULL DEFAULT 'manual',  -- 'manual' | 'hearing' | 'template:<name>'
    created_by    INTEGER REFERENCES members(id) ON DELETE SET NULL,
    created_at    REAL NOT NULL,
    last_start    REAL,          -- the latest occurrence materialised (the recurrence cursor)
    horizon_at    REAL           -- when more occurrences must be materialised; NULL: none left
);
CREATE INDEX actions_horizon ON actions(horizon_at) WHERE horizon_at IS NOT NULL;
CREATE INDEX actions_case ON actions(case_id) WHERE case_id IS NOT NULL;
-- At most one live court-hearing action per case, and one live action per built-in template.
CREATE UNIQUE INDEX actions_hearing ON actions(case_id) WHERE origin = 'hearing' AND state = 'active';
CREATE UNIQUE INDEX actions_template ON actions(origin)
    WHERE origin LIKE 'template:%' AND state = 'active';

-- One occurrence of an action. going: the headcount kept after the RSVP rows are purged.
CREATE TABLE occurrences (
    id          INTEGER PRIMARY KEY,
    action_id   INTEGER NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
    start_at    REAL NOT NULL,
    state       TEXT NOT NULL DEFAULT 'scheduled' CHECK (state IN ('scheduled', 'cancelled')),
    reveal_at   REAL,            -- when the exact place goes to those who joined
    revealed_at REAL,
    skipped     INTEGER NOT NULL DEFAULT 0,   -- reminders (and reveals) missed while down
    going       INTEGER,
    UNIQUE (action_id, start_at)
);
CREATE INDEX occurrences_start ON occurrences(start_at) WHERE state = 'scheduled';
CREATE INDEX occurrences_unsettled ON occurrences(start_at) WHERE going IS NULL;
CREATE INDEX occurrences_reveal ON occurrences(reveal_at)
    WHERE reveal_at IS NOT NULL AND revealed_at IS NULL;

-- One reminder of one occurrence, streamed into the outbox in chunks of recipients ordered by
-- member id (phase 'audience' then 'rsvp', `cursor` = the last member id written). Outbox
-- idempotency keys are (action, occurrence start, offset, member, transport), so a double fire
-- writes nothing twice.
--   pending -> sending -> sent
--   pending -> merged    another reminder of the same occurrence, due at the same time, went
--   pending -> skipped   the action had started when the bot came back (counted, coordinators told)
--   pending -> cancelled the occurrence or action was cancelled or moved
CREATE TABLE reminders (
    occurrence_id INTEGER NOT NULL REFERENCES occurrences(id) ON DELETE CASCADE,
    offset_s      INTEGER NOT NULL,
    due_at        REAL NOT NULL,
    scope         TEXT NOT NULL CHECK (scope IN ('audience', 'rsvp')),
    state         TEXT NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'sending', 'sent', 'merged', 'skipped', 'cancelled')),
    phase         TEXT NOT NULL DEFAULT 'audience' CHECK (phase IN ('audience', 'rsvp')),
    cursor        INTEGER NOT NULL DEFAULT 0,
    late          INTEGER NOT NULL DEFAULT 0,
    fired_at      REAL,
    done_at       REAL,
    messages      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (occurrence_id, offset_s)
) WITHOUT ROWID;
CREATE INDEX reminders_due ON reminders(due_at) WHERE state IN ('pending', 'sending');

-- Who said they will come to an occurrence. Purged (the count kept) soon after it took place.
CREATE TABLE rsvps (
    occurrence_id INTEGER NOT NULL REFERENCES occurrences(id) ON DELETE CASCADE,
    member_id     INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    created_at    REAL NOT NULL,
    PRIMARY KEY (occurrence_id, member_id)
) WITHOUT ROWID;
CREATE INDEX rsvps_member ON rsvps(member_id);

-- Letters written to a prisoner, counted per case and month ('YYYY-MM'). Never who wrote.
CREATE TABLE letter_tally (
    case_id   INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    month     TEXT NOT NULL,
    letters   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (case_id, month)
) WITHOUT ROWID;
