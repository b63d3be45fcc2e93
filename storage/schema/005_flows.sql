-- Report drafts now live with every other flow's state in `conversations` (bot/flows.py seals
-- a secret flow's data under the process's draft key), so the second table and the two
-- triggers that tied it to conversations go.
DROP TRIGGER report_drafts_detach;
DROP TRIGGER report_drafts_abandon;
DROP TABLE report_drafts;
