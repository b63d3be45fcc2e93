-- Issue 18, transfers ("etap"): a prisoner in transit between facilities, whereabouts unknown.
-- One open row per case (ended_at NULL) while in transit; setting a new facility ends it and
-- keeps it as history with its dates. started_on: the local date the coordinator gave (or
-- today), for "days in transit". prev_status: what the sheet said before, restored at arrival.
-- reminded_at: the last daily reminder to coordinators; alert_id: the urgent alert raised when
-- the transit lasted too long (re-sent until /ack like any urgent alert).
CREATE TABLE case_transits (
    id           INTEGER PRIMARY KEY,
    case_id      INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    started_on   TEXT NOT NULL,
    started_at   REAL NOT NULL,
    prev_status  TEXT NOT NULL,
    from_facility TEXT,
    ended_at     REAL,
    to_facility  TEXT,
    reminded_at  REAL,
    alert_id     INTEGER
);
CREATE UNIQUE INDEX case_transits_open ON case_transits(case_id) WHERE ended_at IS NULL;
