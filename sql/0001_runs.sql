-- The run ledger: one row per invocation of a job, whatever happens.
CREATE TABLE jobctl.runs (
    id                bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT runs_pkey PRIMARY KEY,
    job               text        NOT NULL,
    params            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    partition         text,
    trigger           text        NOT NULL,
    parent_id         bigint      CONSTRAINT runs_parent_fkey REFERENCES jobctl.runs (id) ON DELETE CASCADE,
    status            text        NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    heartbeat_at      timestamptz,
    duration_ms       bigint,
    attempts          integer     NOT NULL DEFAULT 0,
    records_total     bigint      NOT NULL DEFAULT 0,
    records_new       bigint      NOT NULL DEFAULT 0,
    records_updated   bigint      NOT NULL DEFAULT 0,
    records_unchanged bigint      NOT NULL DEFAULT 0,
    records_errors    bigint      NOT NULL DEFAULT 0,
    records_removed   bigint      NOT NULL DEFAULT 0,
    records_deleted   bigint      NOT NULL DEFAULT 0,
    stats             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error_message     text,
    error_detail      text,
    source            text,
    host              text        NOT NULL,
    pid               integer     NOT NULL,
    jobctl_version    text        NOT NULL,
    scheduled_for     timestamptz,
    -- server backend that holds the job's advisory lock for this run: a `running`
    -- row whose backend no longer holds the lock belongs to a dead process.
    lock_backend_pid  integer,
    lock_key          integer,
    log_tail          text[]      NOT NULL DEFAULT '{}',
    CONSTRAINT runs_status_check CHECK (
        status IN ('running', 'completed', 'failed', 'cancelled', 'skipped', 'abandoned')
    ),
    CONSTRAINT runs_trigger_check CHECK (
        trigger IN ('manual', 'timer', 'cron', 'schedule', 'backfill', 'catchup')
    )
);

CREATE INDEX runs_job_started_idx ON jobctl.runs (job, started_at DESC);
CREATE INDEX runs_started_idx ON jobctl.runs (started_at DESC);
CREATE INDEX runs_parent_idx ON jobctl.runs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX runs_running_idx ON jobctl.runs (job) WHERE status = 'running';
CREATE INDEX runs_slot_idx ON jobctl.runs (job, scheduled_for) WHERE scheduled_for IS NOT NULL;
CREATE INDEX runs_partition_idx ON jobctl.runs (job, partition) WHERE partition IS NOT NULL;
