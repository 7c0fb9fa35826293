-- lane-central schema, version 2: the views ops, Grafana or any SQL tool read
-- (docs/central.md, "Views"). Columns are part of the interface: add, never rename.

-- Every lane at a glance. state: the lane's own availability (online / offline / stopped), or
-- 'silent' when it says online but nothing arrived for three status intervals (90 s).
CREATE VIEW lane_board AS
SELECT
    l.port_id,
    l.lane_id,
    CASE
        WHEN l.availability = 'online' AND l.last_seen_at < now() - interval '90 seconds'
            THEN 'silent'
        ELSE coalesce(l.availability, 'unknown')
    END AS state,
    l.last_seen_at,
    extract(epoch FROM now() - l.last_seen_at)::double precision AS seen_age_s,
    l.last_crossing_at,
    l.acked_seq,
    l.highest_seq,
    l.stored,
    l.duplicates,
    l.quarantined,
    (SELECT count(*) FROM gaps g
      WHERE g.port_id = l.port_id AND g.lane_id = l.lane_id AND g.closed_at IS NULL) AS open_gaps,
    l.highest_seq - l.acked_seq - (SELECT count(*) FROM lane_seqs_ahead a
      WHERE a.port_id = l.port_id AND a.lane_id = l.lane_id) AS missing,
    l.ack_published_seq,
    l.outbox_depth,
    l.outbox_rows,
    l.outbox_oldest_unsent_age_s,
    l.lane_last_seq,
    l.lane_acked_seq,
    l.cache_version,
    l.cache_age_s,
    l.cache_stale,
    l.faults,
    l.uplink_state,
    l.agent_version,
    l.status_time
FROM lanes l;

-- Crossings with the lane's names for dashboards; the full event stays in crossings.payload.
CREATE VIEW crossing_list AS
SELECT
    c.event_id,
    c.port_id,
    c.lane_id,
    c.seq,
    c.opened_at,
    c.closed_at,
    c.committed_at,
    c.received_at,
    extract(epoch FROM c.received_at - c.committed_at)::double precision AS delivery_s,
    c.recommendation,
    c.reasons,
    c.card_refs,
    cardinality(c.card_refs) AS cards,
    c.plate_text,
    c.plate_image_sha256,
    (p.sha256 IS NOT NULL) AS plate_image_stored,
    c.schema_id
FROM crossings c
LEFT JOIN plate_images p ON p.sha256 = c.plate_image_sha256;

-- Gaps with how long each stayed (or has stayed) open.
CREATE VIEW gap_list AS
SELECT
    g.id,
    g.port_id,
    g.lane_id,
    g.first_seq,
    g.last_seq,
    g.last_seq - g.first_seq + 1 AS size,
    g.opened_at,
    g.closed_at,
    (g.closed_at IS NULL) AS open,
    extract(epoch FROM coalesce(g.closed_at, now()) - g.opened_at)::double precision AS open_s
FROM gaps g;

-- Crossings per minute, lane and recommendation over the last day (a Grafana time series).
CREATE VIEW crossings_per_minute AS
SELECT
    date_trunc('minute', c.closed_at) AS minute,
    c.port_id,
    c.lane_id,
    c.recommendation,
    count(*) AS crossings
FROM crossings c
WHERE c.closed_at >= now() - interval '1 day'
GROUP BY 1, 2, 3, 4;

-- What was refused, by reason, over the last day.
CREATE VIEW quarantine_summary AS
SELECT
    q.reason,
    q.port_id,
    q.lane_id,
    count(*) AS messages,
    min(q.received_at) AS first_at,
    max(q.received_at) AS last_at
FROM quarantine q
WHERE q.received_at >= now() - interval '1 day'
GROUP BY 1, 2, 3;
