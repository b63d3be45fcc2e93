-- Core: members and their platform identities, cases (minimal), invites, inbox, outbox,
-- conversation state, rate-limit buckets, audit, settings. Times are UTC epoch seconds.

-- AUTOINCREMENT: a member number is never reused after /forgetme, so audit rows and
-- "/promote N" cannot come to mean someone else.
CREATE TABLE members (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    role        TEXT NOT NULL CHECK (role IN ('activist', 'family', 'coordinator', 'admin')),
    language    TEXT,
    timezone    TEXT,
    quiet_hours TEXT,
    created_at  REAL NOT NULL
);

-- Signal members are stored by sourceUuid, Telegram members by user id, never by phone number.
CREATE TABLE identities (
    transport   TEXT NOT NULL,
    address     TEXT NOT NULL,
    member_id   INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    chat        TEXT NOT NULL,
    reachable   INTEGER NOT NULL DEFAULT 1,
    created_at  REAL NOT NULL,
    PRIMARY KEY (transport, address)
);
CREATE INDEX identities_member ON identities(member_id);

CREATE TABLE cases (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    visibility  TEXT NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'restricted')),
    created_at  REAL NOT NULL
);

-- Who is tied to a case: relatives (family) report for it; coordinators may be assigned.
CREATE TABLE case_members (
    case_id     INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    member_id   INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    relation    TEXT NOT NULL CHECK (relation IN ('family', 'coordinator')),
    PRIMARY KEY (case_id, member_id, relation)
);
CREATE INDEX case_members_member ON case_members(member_id);

-- Codes are stored only as keyed hashes: a copy of the database does not yield usable codes.
CREATE TABLE invites (
    id          INTEGER PRIMARY KEY,
    code_hash   TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('activist', 'family', 'coordinator', 'admin')),
    case_id     INTEGER REFERENCES cases(id) ON DELETE CASCADE,
    uses_left   INTEGER NOT NULL,
    expires_at  REAL NOT NULL,
    created_by  INTEGER REFERENCES members(id) ON DELETE SET NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE rate_buckets (
    bucket        TEXT PRIMARY KEY,
    window_start  REAL NOT NULL,
    count         INTEGER NOT NULL,
    locked_until  REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- One row per platform message handled, written in the same transaction as its effects.
CREATE TABLE inbox (
    transport   TEXT NOT NULL,
    key         TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (transport, key)
) WITHOUT ROWID;

CREATE TABLE conversations (
    member_id   INTEGER PRIMARY KEY REFERENCES members(id) ON DELETE CASCADE,
    flow        TEXT NOT NULL,
    step        TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}',
    updated_at  REAL NOT NULL
);

-- Every message the bot sends is first a row here (priority 0 emergency .. 3 bulk).
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    transport    TEXT NOT NULL,
    chat         TEXT NOT NULL,
    member_id    INTEGER REFERENCES members(id) ON DELETE CASCADE,
    priority     INTEGER NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'maybe_sent', 'cancelled')),
    body         TEXT NOT NULL,
    idem_key     TEXT UNIQUE,
    broadcast_id INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    not_before   REAL NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    done_at      REAL,
    platform_ref TEXT,
    error        TEXT
);
CREATE INDEX outbox_pending ON outbox(transport, priority, id) WHERE state = 'pending';
CREATE INDEX outbox_sending ON outbox(transport) WHERE state = 'sending';

-- Privileged acts: who (member id), what (action name), which object (internal id). No content.
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,
    at        REAL NOT NULL,
    actor_id  INTEGER,
    action    TEXT NOT NULL,
    target    TEXT
);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;
