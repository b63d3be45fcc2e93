-- Loop health, written by the running bot (bot/health.py) so that `vigil status`, another
-- process, can say which loop is failing or wedged. Only loop names (internal, e.g.
-- 'dispatcher:telegram'), counters and exception type names; times are rounded to the minute,
-- so they cannot be lined up with a person's message. The row named '*' is the process
-- itself: its `state` is 'running' or 'stopped', its `updated_at` says how fresh the rest is.
CREATE TABLE loop_health (
    name            TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    restarts        INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    failures_in_row INTEGER NOT NULL DEFAULT 0,
    last_failure    TEXT,
    last_failure_at REAL,
    alerted_at      REAL,
    updated_at      REAL NOT NULL
) WITHOUT ROWID;
