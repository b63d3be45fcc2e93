-- Issue 18, series: a recurring action may end (until_date: the last local calendar date, in
-- the action's zone, ISO 'YYYY-MM-DD'; NULL: no end), and a member may join every date of a
-- series at once. A series RSVP is copied into rsvps for each occurrence as it is
-- materialised (and for the future ones already materialised when joining), so reminders and
-- headcounts keep reading rsvps; leaving one date deletes that date's row only.
ALTER TABLE actions ADD COLUMN until_date TEXT;
CREATE TABLE series_rsvps (
    action_id  INTEGER NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
    member_id  INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    PRIMARY KEY (action_id, member_id)
) WITHOUT ROWID;
CREATE INDEX series_rsvps_member ON series_rsvps(member_id);
-- One date of a series a member will miss, by its start instant, for dates not materialised
-- yet when they said so (materialised dates just lose their rsvps row).
CREATE TABLE series_skips (
    action_id  INTEGER NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
    member_id  INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    start_at   REAL NOT NULL,
    PRIMARY KEY (action_id, member_id, start_at)
) WITHOUT ROWID;
