//! The core PostgreSQL tables (issue #12).
//!
//! # Design
//! A queue that updates and deletes rows one by one under `SKIP LOCKED`
//! decays as dead tuples pile up (DESIGN.md §7). So the hot tables are
//! append-only and partitioned, and partitions are dropped whole:
//! - `dedup` is partitioned by UTC day; days past the window are dropped;
//! - `outbox` (one row per event and destination) and `outbox_status`
//!   (appended on each delivered, retry or dead-letter decision; the newest
//!   row of an entry wins) are partitioned by dataset; a dataset older than
//!   the current one is dropped once every entry in it is done, as
//!   RudderStack's jobsdb does.
//!
//! Small or cold tables (leases, quarantine, dead letters, holds) are
//! ordinary tables.

/// Core migrations; step N is version N of module `core`.
pub(crate) const CORE: &[&str] = &[
    // 1: the ingest commit, the delivery queue, leases, dead letters,
    //    quarantine and consent holds.
    r#"
    CREATE TABLE dedup (
        bucket      integer NOT NULL,
        source      text NOT NULL,
        message_id  text NOT NULL,
        PRIMARY KEY (bucket, source, message_id)
    ) PARTITION BY LIST (bucket);

    CREATE TABLE datasets (
        ds             bigint PRIMARY KEY,
        started_at_ms  bigint NOT NULL
    );
    INSERT INTO datasets VALUES (1, (extract(epoch from now()) * 1000)::bigint);

    CREATE SEQUENCE outbox_seq;
    CREATE TABLE outbox (
        ds              bigint NOT NULL,
        seq             bigint NOT NULL DEFAULT nextval('outbox_seq'),
        destination     text NOT NULL,
        source          text NOT NULL,
        message_id      text NOT NULL,
        event           text NOT NULL,
        enqueued_at_ms  bigint NOT NULL,
        PRIMARY KEY (ds, seq)
    ) PARTITION BY LIST (ds);
    CREATE INDEX outbox_destination ON outbox (destination, seq);
    CREATE TABLE outbox_ds1 PARTITION OF outbox FOR VALUES IN (1);

    CREATE SEQUENCE outbox_status_seq;
    CREATE TABLE outbox_status (
        ds               bigint NOT NULL,
        seq              bigint NOT NULL,
        id               bigint NOT NULL DEFAULT nextval('outbox_status_seq'),
        done             boolean NOT NULL,
        attempts         integer NOT NULL,
        next_attempt_ms  bigint NOT NULL,
        error            text
    ) PARTITION BY LIST (ds);
    CREATE INDEX outbox_status_entry ON outbox_status (seq, id);
    CREATE TABLE outbox_status_ds1 PARTITION OF outbox_status FOR VALUES IN (1);

    CREATE TABLE leases (
        destination    text PRIMARY KEY,
        owner          text NOT NULL,
        expires_at_ms  bigint NOT NULL
    );

    CREATE TABLE dead_letters (
        id              bigserial PRIMARY KEY,
        destination     text NOT NULL,
        source          text NOT NULL,
        message_id      text NOT NULL,
        event           text NOT NULL,
        enqueued_at_ms  bigint NOT NULL,
        failed_at_ms    bigint NOT NULL,
        attempts        integer NOT NULL,
        reason          text NOT NULL
    );
    CREATE INDEX dead_letters_destination ON dead_letters (destination, id);

    CREATE TABLE quarantine (
        id              bigserial PRIMARY KEY,
        source          text NOT NULL,
        received_at_ms  bigint NOT NULL,
        reason          text NOT NULL,
        detail          text NOT NULL,
        raw             text NOT NULL,
        destination     text,
        rule            text,
        message_id      text
    );

    CREATE TABLE consent_holds (
        id              bigserial PRIMARY KEY,
        destination     text NOT NULL,
        source          text NOT NULL,
        visitor         text NOT NULL,
        message_id      text NOT NULL,
        event           text NOT NULL,
        held_at_ms      bigint NOT NULL,
        expires_at_ms   bigint NOT NULL,
        UNIQUE (destination, message_id)
    );
    CREATE INDEX consent_holds_visitor ON consent_holds (destination, visitor);
    CREATE INDEX consent_holds_expiry ON consent_holds (destination, expires_at_ms);

    -- Text as jsonb, or NULL when it is not JSON (privacy matching over
    -- quarantined raw bodies).
    CREATE FUNCTION waymark_try_jsonb(t text) RETURNS jsonb
        LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN RETURN t::jsonb; EXCEPTION WHEN others THEN RETURN NULL; END $$;

    CREATE TABLE health (
        worker         text PRIMARY KEY,
        checked_at_ms  bigint NOT NULL
    );
    "#,
    // 2: the purposes the edge granted each event (issue 13), kept with it
    //    in the outbox, the dead letters and a destination's quarantine, so
    //    destinations and replays read the one decision made at ingest.
    r#"
    ALTER TABLE outbox ADD COLUMN granted text NOT NULL DEFAULT '';
    ALTER TABLE dead_letters ADD COLUMN granted text NOT NULL DEFAULT '';
    ALTER TABLE quarantine ADD COLUMN granted text NOT NULL DEFAULT '';
    "#,
];
