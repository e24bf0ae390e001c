-- The ledger's reads at a million runs (issue 13): every listing and health read is
-- an index range scan of a few rows per job, never a read of every run.
--
-- `runs list` orders by (started_at, id) newest first, with or without --job, --status
-- and --since: one index per filter shape, each ending in (started_at, id) so that the
-- first rows of the order are the first entries of one index range.
DROP INDEX jobctl.runs_started_idx;
DROP INDEX jobctl.runs_job_started_idx;
CREATE INDEX runs_started_idx ON jobctl.runs (started_at, id);
CREATE INDEX runs_job_started_idx ON jobctl.runs (job, started_at, id);
CREATE INDEX runs_status_started_idx ON jobctl.runs (status, started_at, id);
-- Also a job's last success and its failures since (status, jobs list, metrics, check,
-- the report): dry_run included, so that the streak is counted from the index alone.
CREATE INDEX runs_job_status_started_idx ON jobctl.runs (job, status, started_at, id)
    INCLUDE (dry_run);
-- `runs gaps`, a tick's "slot already done": the slots a job's completed runs served.
CREATE INDEX runs_done_slot_idx ON jobctl.runs (job, scheduled_for)
    WHERE status = 'completed' AND NOT dry_run AND scheduled_for IS NOT NULL;

-- Runs by job and status, and the records the completed non-dry runs moved, over the
-- whole ledger (`metrics`): kept by the statement triggers below from every insert,
-- update and delete of jobctl.runs (cleanup's cascades too), in the same transaction,
-- so a read is exact. Written only by these triggers; read by jobctl/db/job_state.py.
-- A heartbeat changes no total and touches no row here (no lock, so no wait).
CREATE TABLE jobctl.run_totals (
    job               text   NOT NULL,
    status            text   NOT NULL,
    runs              bigint NOT NULL DEFAULT 0,
    -- completed runs that were not dry runs: the ones the records columns sum
    done_runs         bigint NOT NULL DEFAULT 0,
    records_total     bigint NOT NULL DEFAULT 0,
    records_new       bigint NOT NULL DEFAULT 0,
    records_updated   bigint NOT NULL DEFAULT 0,
    records_unchanged bigint NOT NULL DEFAULT 0,
    records_errors    bigint NOT NULL DEFAULT 0,
    records_removed   bigint NOT NULL DEFAULT 0,
    records_deleted   bigint NOT NULL DEFAULT 0,
    CONSTRAINT run_totals_pkey PRIMARY KEY (job, status)
);

-- The statement's changed rows count +1 as they are now and -1 as they were; summed
-- per (job, status), only the totals that change are written, in key order (two
-- statements lock the rows they share in the same order).
CREATE OR REPLACE FUNCTION jobctl.run_totals_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT 1 AS n, r.* FROM new_runs r'
        WHEN 'DELETE' THEN 'SELECT -1 AS n, r.* FROM old_runs r'
        ELSE 'SELECT 1 AS n, r.* FROM new_runs r UNION ALL SELECT -1, r.* FROM old_runs r'
    END;
BEGIN
    -- A heartbeat, a log tail, a note in stats: nothing counted changed (the common
    -- update, every few seconds per run), nothing to plan or write.
    -- (Nested: an IF's condition is planned whole, and an insert has no old_runs.)
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (
            SELECT 1 FROM new_runs n JOIN old_runs o ON o.id = n.id
             WHERE (n.job, n.status, n.dry_run, n.records_total, n.records_new,
                    n.records_updated, n.records_unchanged, n.records_errors,
                    n.records_removed, n.records_deleted)
                   IS DISTINCT FROM
                   (o.job, o.status, o.dry_run, o.records_total, o.records_new,
                    o.records_updated, o.records_unchanged, o.records_errors,
                    o.records_removed, o.records_deleted)
        ) THEN
            RETURN NULL;
        END IF;
    END IF;
    -- (replace, not format: a percent sign would be a driver placeholder to psycopg)
    EXECUTE replace($sql$
        INSERT INTO jobctl.run_totals AS t (job, status, runs, done_runs, records_total,
            records_new, records_updated, records_unchanged, records_errors,
            records_removed, records_deleted)
        SELECT * FROM (
            SELECT job, status, sum(n) AS runs,
                   coalesce(sum(n) FILTER (WHERE ok), 0) AS done_runs,
                   coalesce(sum(n * records_total) FILTER (WHERE ok), 0) AS records_total,
                   coalesce(sum(n * records_new) FILTER (WHERE ok), 0) AS records_new,
                   coalesce(sum(n * records_updated) FILTER (WHERE ok), 0) AS records_updated,
                   coalesce(sum(n * records_unchanged) FILTER (WHERE ok), 0) AS records_unchanged,
                   coalesce(sum(n * records_errors) FILTER (WHERE ok), 0) AS records_errors,
                   coalesce(sum(n * records_removed) FILTER (WHERE ok), 0) AS records_removed,
                   coalesce(sum(n * records_deleted) FILTER (WHERE ok), 0) AS records_deleted
            FROM (SELECT c.*, c.status = 'completed' AND NOT c.dry_run AS ok FROM (@changed@) c) d
            GROUP BY job, status
        ) s
        WHERE (runs, done_runs, records_total, records_new, records_updated,
               records_unchanged, records_errors, records_removed, records_deleted)
              <> (0, 0, 0, 0, 0, 0, 0, 0, 0)
        ORDER BY job, status
        ON CONFLICT (job, status) DO UPDATE SET
            runs = t.runs + excluded.runs,
            done_runs = t.done_runs + excluded.done_runs,
            records_total = t.records_total + excluded.records_total,
            records_new = t.records_new + excluded.records_new,
            records_updated = t.records_updated + excluded.records_updated,
            records_unchanged = t.records_unchanged + excluded.records_unchanged,
            records_errors = t.records_errors + excluded.records_errors,
            records_removed = t.records_removed + excluded.records_removed,
            records_deleted = t.records_deleted + excluded.records_deleted
    $sql$, '@changed@', changed);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION jobctl.run_totals_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM jobctl.run_totals;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_totals_insert AFTER INSERT ON jobctl.runs
    REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION jobctl.run_totals_apply();
CREATE TRIGGER runs_totals_update AFTER UPDATE ON jobctl.runs
    REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION jobctl.run_totals_apply();
CREATE TRIGGER runs_totals_delete AFTER DELETE ON jobctl.runs
    REFERENCING OLD TABLE AS old_runs
    FOR EACH STATEMENT EXECUTE FUNCTION jobctl.run_totals_apply();
CREATE TRIGGER runs_totals_truncate AFTER TRUNCATE ON jobctl.runs
    FOR EACH STATEMENT EXECUTE FUNCTION jobctl.run_totals_truncate();

-- The ledger as it is now: no run changes meanwhile (DROP INDEX above holds the
-- table's exclusive lock until the migration commits).
INSERT INTO jobctl.run_totals (job, status, runs, done_runs, records_total, records_new,
    records_updated, records_unchanged, records_errors, records_removed, records_deleted)
SELECT job, status, count(*), count(*) FILTER (WHERE ok),
       coalesce(sum(records_total) FILTER (WHERE ok), 0),
       coalesce(sum(records_new) FILTER (WHERE ok), 0),
       coalesce(sum(records_updated) FILTER (WHERE ok), 0),
       coalesce(sum(records_unchanged) FILTER (WHERE ok), 0),
       coalesce(sum(records_errors) FILTER (WHERE ok), 0),
       coalesce(sum(records_removed) FILTER (WHERE ok), 0),
       coalesce(sum(records_deleted) FILTER (WHERE ok), 0)
FROM (SELECT r.*, r.status = 'completed' AND NOT r.dry_run AS ok FROM jobctl.runs r) d
GROUP BY job, status;
