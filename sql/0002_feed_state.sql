-- Per target table and partition: when it was last synced and from what content,
-- so an unchanged feed is recognised cheaply and `last_seen_at` of unchanged rows
-- is known without rewriting them.
CREATE TABLE jobctl.feed_state (
    target          text        NOT NULL,
    partition       text        NOT NULL DEFAULT '',
    source          text        NOT NULL,
    last_synced_at  timestamptz NOT NULL,
    last_run_id     bigint,
    fingerprint     text,
    content_sha256  text,
    content_bytes   bigint,
    etag            text,
    last_modified   text,
    rows_active     bigint      NOT NULL DEFAULT 0,
    CONSTRAINT feed_state_pkey PRIMARY KEY (target, partition)
);
