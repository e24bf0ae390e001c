-- A --dry-run run is recorded (status completed) but applied nothing, so it must
-- never cover a schedule slot or a date: every "done" query filters on this flag.
ALTER TABLE jobctl.runs ADD COLUMN dry_run boolean NOT NULL DEFAULT false;
