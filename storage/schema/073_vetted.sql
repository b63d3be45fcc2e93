-- Issue 14 item 4, vetted and open members. Who joined by an invite (any role) is vetted;
-- who joined by a bare /start is an open supporter: public cases and public updates only,
-- never an action's place, RSVP, relatives' news, or a broadcast not marked public.
-- The column defaults to 0 so that a member created by a path that forgets to decide is
-- open, not trusted (storage/members.py always says which).
ALTER TABLE members ADD COLUMN vetted INTEGER NOT NULL DEFAULT 0;
-- Existing members. Every role but 'activist' needs an invite or an admin's /promote, so
-- those are vetted. An activist joined either by invite or by bare /start, and the only trace
-- of an invite is the 'invite.redeemed' audit row written under the member's number at
-- redemption: activists with such a row are vetted, the others are marked open. An activist
-- invited so long ago that the audit row was purged by retention becomes open too; the
-- cautious side, undone by sending them a new invite (redeeming one vets them).
UPDATE members SET vetted = 1
WHERE role != 'activist'
   OR EXISTS (SELECT 1 FROM audit a WHERE a.actor_id = members.id
              AND a.action = 'invite.redeemed');

-- A broadcast reaches open supporters only when marked public (/broadcast SEGMENT public
-- TEXT); a case alert is public unless it carries relatives' news (an update published from
-- a report). Set when the fan-out is created, so a later purge of the report changes nothing.
ALTER TABLE broadcasts ADD COLUMN public INTEGER NOT NULL DEFAULT 0;
UPDATE broadcasts SET public = 1
WHERE kind = 'alert'
  AND NOT EXISTS (SELECT 1 FROM case_updates u WHERE u.id = broadcasts.update_id
                  AND u.report_id IS NOT NULL);

-- Relatives' news on the case card: an update published from a report (/publish) is for
-- vetted members. Kept as its own flag because report_id is cleared when the report is purged.
ALTER TABLE case_updates ADD COLUMN vetted_only INTEGER NOT NULL DEFAULT 0;
UPDATE case_updates SET vetted_only = 1 WHERE report_id IS NOT NULL;
