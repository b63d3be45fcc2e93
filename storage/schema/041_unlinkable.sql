-- Issue 13: with the database key in hand, no join may say which relative sent which report.
-- The sender of an unacknowledged emergency is kept only sealed under a key that lives in the
-- running process's memory (Services.draft_key), and forgotten at the acknowledgement; the
-- plain column is emptied (old alerts lose the "someone is on it" message, nothing else).
ALTER TABLE urgent_alerts ADD COLUMN reporter_sealed BLOB;
UPDATE urgent_alerts SET reporter_id = NULL;
-- Times that could be joined to a report's are kept to the hour (reports.created_at,
-- inbox.received_at); the second is not needed by anyone.
UPDATE reports SET created_at = CAST(created_at / 3600 AS INTEGER) * 3600.0;
UPDATE inbox SET received_at = CAST(received_at / 3600 AS INTEGER) * 3600.0;
