-- lane-central schema, version 1: what the ingest stores (docs/central.md, "Tables").
--
-- Crossings are partitioned by month of closed_at (the time the vehicle left the booth, by the
-- lane's clock); partitions are created ahead by `lane-central db upgrade` and by every ingest
-- worker, and a default partition keeps an event whose clock is far off instead of refusing it.

CREATE TABLE lanes (
    port_id text NOT NULL,
    lane_id text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    -- The delivery contract (docs/delivery.md): acked_seq is the highest seq N such that every
    -- crossing 1..N of the lane is stored; highest_seq the highest stored at all.
    acked_seq bigint NOT NULL DEFAULT 0,
    highest_seq bigint NOT NULL DEFAULT 0,
    ack_published_seq bigint NOT NULL DEFAULT 0,
    ack_published_at timestamptz,
    stored bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    quarantined bigint NOT NULL DEFAULT 0,
    last_crossing_at timestamptz,
    last_stored_at timestamptz,
    -- Retained availability topic: online / offline (last will) / stopped.
    availability text,
    availability_at timestamptz,
    -- Retained status topic, the document as received plus the fields the board shows.
    status jsonb,
    status_time timestamptz,
    status_received_at timestamptz,
    agent_version text,
    uplink_state text,
    outbox_depth bigint,
    outbox_rows bigint,
    outbox_oldest_unsent_age_s double precision,
    lane_last_seq bigint,
    lane_acked_seq bigint,
    cache_version bigint,
    cache_age_s double precision,
    cache_stale boolean,
    faults text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (port_id, lane_id)
);

CREATE TABLE crossings (
    event_id uuid NOT NULL,
    closed_at timestamptz NOT NULL,
    port_id text NOT NULL,
    lane_id text NOT NULL,
    seq bigint NOT NULL,
    opened_at timestamptz NOT NULL,
    committed_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    schema_id text NOT NULL,
    recommendation text NOT NULL,
    reasons text[] NOT NULL,
    card_refs text[] NOT NULL,
    plate_text text,
    plate_image_sha256 text,
    payload jsonb NOT NULL,
    PRIMARY KEY (event_id, closed_at)
) PARTITION BY RANGE (closed_at);

CREATE TABLE crossings_default PARTITION OF crossings DEFAULT;

-- The questions ops ask: a lane over time, a card, a plate, a recommendation.
CREATE INDEX crossings_lane_time ON crossings (port_id, lane_id, closed_at DESC);
CREATE INDEX crossings_lane_seq ON crossings (port_id, lane_id, seq);
CREATE INDEX crossings_card_refs ON crossings USING gin (card_refs);
CREATE INDEX crossings_plate ON crossings (plate_text, closed_at DESC) WHERE plate_text IS NOT NULL;
CREATE INDEX crossings_recommendation ON crossings (recommendation, closed_at DESC);

-- Stored seqs above a lane's watermark (arrived out of order, across a gap): what lets the
-- watermark jump when the missing events arrive. Rows at or below the watermark are deleted.
CREATE TABLE lane_seqs_ahead (
    port_id text NOT NULL,
    lane_id text NOT NULL,
    seq bigint NOT NULL,
    event_id uuid NOT NULL,
    closed_at timestamptz NOT NULL,
    PRIMARY KEY (port_id, lane_id, seq)
);

-- Missing seqs as noticed: opened when a later seq arrived first, closed when the watermark
-- passed last_seq (every missing event arrived).
CREATE TABLE gaps (
    id bigserial PRIMARY KEY,
    port_id text NOT NULL,
    lane_id text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    opened_at timestamptz NOT NULL DEFAULT now(),
    closed_at timestamptz,
    CHECK (first_seq <= last_seq)
);
CREATE INDEX gaps_open ON gaps (port_id, lane_id, last_seq) WHERE closed_at IS NULL;
CREATE INDEX gaps_opened ON gaps (opened_at DESC);

-- Everything refused, with the reason and the bytes as received: nothing is dropped silently.
CREATE TABLE quarantine (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    port_id text,
    lane_id text,
    reason text NOT NULL,
    detail text NOT NULL,
    payload bytea NOT NULL
);
CREATE INDEX quarantine_received ON quarantine (received_at DESC);
CREATE INDEX quarantine_reason ON quarantine (reason, received_at DESC);

-- Plate crops, named by the sha256 the crossing event gives (crossings.plate_image_sha256).
CREATE TABLE plate_images (
    sha256 text PRIMARY KEY,
    port_id text NOT NULL,
    lane_id text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    size_bytes integer NOT NULL,
    jpeg bytea NOT NULL
);
CREATE INDEX crossings_plate_image ON crossings (plate_image_sha256) WHERE plate_image_sha256 IS NOT NULL;
