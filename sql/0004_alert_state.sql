-- Per job: its current streak of consecutive failures and the last alert sent about
-- it, so that a job failing every tick alerts once, escalates once and then reminds
-- at most once per repeat_after, from whichever host runs it. Changed only by
-- guarded statements (jobctl/db/alert_state.py): two hosts never both send one alert.
CREATE TABLE jobctl.alert_state (
    job               text        CONSTRAINT alert_state_pkey PRIMARY KEY,
    failures          integer     NOT NULL DEFAULT 0,
    first_failed_at   timestamptz,
    last_failed_run   bigint,
    last_alert_kind   text,
    last_alert_at     timestamptz,
    last_alert_run    bigint,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_state_kind_check CHECK (
        last_alert_kind IN ('failure', 'escalation', 'reminder', 'escalation_reminder')
    )
);
