-- One row per report delivered: the period it covered, where it went (an e-mail
-- address, or a webhook channel) and the run that sent it. A report run that is
-- retried or run again for the same period sends only what is not here yet, so a
-- weekly mail with one bad address does not reach the thousand good ones three
-- times (`jobctl report --force` sends again). Written only by
-- jobctl/db/report_deliveries.py.
CREATE TABLE jobctl.report_deliveries (
    period_start date        NOT NULL,
    period_end   date        NOT NULL,
    channel      text        NOT NULL,
    -- the e-mail address, or '' for a webhook
    recipient    text        NOT NULL,
    run_id       bigint,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT report_deliveries_pkey PRIMARY KEY (period_start, period_end, channel, recipient)
);

CREATE INDEX report_deliveries_sent_idx ON jobctl.report_deliveries (sent_at);
