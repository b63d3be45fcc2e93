-- Issue 14, the two-person rule: a network-wide or large broadcast, a promotion to coordinator
-- or admin, the revocation of an admin and an assignment wait here for a second eligible
-- person. subject: what is acted on ("broadcast:12", "member:5"); payload: JSON the act needs
-- (a role, a case id, where the initiator follows progress); case_id: set when the audience is
-- one case's (its other coordinators may then approve). No content: a broadcast's text stays
-- in its broadcasts row.
CREATE TABLE approvals (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('broadcast', 'promote', 'revoke', 'assign')),
    subject      TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    initiator_id INTEGER REFERENCES members(id) ON DELETE SET NULL,
    case_id      INTEGER REFERENCES cases(id) ON DELETE CASCADE,
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'approved', 'rejected', 'expired', 'void')),
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    decided_by   INTEGER REFERENCES members(id) ON DELETE SET NULL,
    decided_at   REAL
);
CREATE INDEX approvals_pending ON approvals(expires_at) WHERE state = 'pending';
