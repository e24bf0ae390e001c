-- One-off scheduled runs (`jobctl schedule add JOB --at WHEN`): a future run of a
-- job, claimed and started by `jobctl schedule run-due` (the per-minute worker).
-- Written only by jobctl/db/scheduled.py.
--
-- status: pending -> running (claimed by a worker; its claim lock, an advisory lock
-- (namespace 'JSCH', id) on the backend claim_backend_pid, is held until the row is
-- finished) -> triggered (a run was started: run_id, run_status) | failed (no run
-- could be started: error_message); pending -> cancelled.
CREATE TABLE jobctl.scheduled (
    id                 bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT scheduled_pkey PRIMARY KEY,
    job                text        NOT NULL,
    params             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    run_at             timestamptz NOT NULL,
    -- the job's zone when it was added: local times and repeats are computed in it
    timezone           text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text,
    status             text        NOT NULL DEFAULT 'pending',
    -- repeat: the next occurrence is anchor_local + occurrence x every, in timezone
    every              text,
    until              timestamptz,
    anchor_local       timestamp,
    occurrence         integer     NOT NULL DEFAULT 0,
    previous_id        bigint,
    claimed_by         text,
    claimed_at         timestamptz,
    claim_backend_pid  integer,
    -- ticks that found the job busy (its lock held) and left the row pending
    attempts           integer     NOT NULL DEFAULT 0,
    run_id             bigint,
    run_status         text,
    error_message      text,
    finished_at        timestamptz,
    CONSTRAINT scheduled_status_check CHECK (
        status IN ('pending', 'running', 'triggered', 'cancelled', 'failed')
    ),
    -- at least one minute ahead when added (a repeat's next occurrence too)
    CONSTRAINT scheduled_future_check CHECK (run_at >= created_at + interval '1 minute'),
    CONSTRAINT scheduled_every_check CHECK (every IN ('day', 'week', 'month')),
    CONSTRAINT scheduled_until_check CHECK (until IS NULL OR (every IS NOT NULL AND until >= run_at)),
    CONSTRAINT scheduled_finished_check CHECK (
        (status IN ('pending', 'running')) = (finished_at IS NULL)
    ),
    CONSTRAINT scheduled_job_check CHECK (length(job) BETWEEN 1 AND 200)
);

-- What the worker looks for every minute: pending rows by due time.
CREATE INDEX scheduled_due_idx ON jobctl.scheduled (run_at, id) WHERE status = 'pending';
-- What cleanup deletes: finished rows by age.
CREATE INDEX scheduled_finished_idx ON jobctl.scheduled (finished_at) WHERE finished_at IS NOT NULL;
-- A repeat creates its next occurrence once.
CREATE UNIQUE INDEX scheduled_previous_key ON jobctl.scheduled (previous_id);
-- One live schedule per job and moment: the runner serves a schedule as the slot
-- run_at, and a second one at the same moment would be skipped as 'slot already done'.
CREATE UNIQUE INDEX scheduled_pending_key ON jobctl.scheduled (job, run_at)
    WHERE status IN ('pending', 'running');
