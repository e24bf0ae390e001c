-- jobctl serve (issue 14): a run started from the web console records trigger 'web'
-- and who asked for it (the token's name; `--by` on the command line, a schedule's
-- creator for the runs the schedule worker starts).
ALTER TABLE jobctl.runs DROP CONSTRAINT runs_trigger_check;
ALTER TABLE jobctl.runs ADD CONSTRAINT runs_trigger_check CHECK (
    trigger IN ('manual', 'timer', 'cron', 'schedule', 'backfill', 'catchup', 'web')
);
ALTER TABLE jobctl.runs ADD COLUMN requested_by text;
