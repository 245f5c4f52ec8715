use super::prom::{parse, quantile};
use super::*;

const TEXT: &str = r#"# TYPE waymark_events_accepted_total counter
waymark_events_accepted_total{source="web"} 10
waymark_events_accepted_total{source="app"} 3
waymark_dedup_hits_total{source="web"} 1
waymark_events_rejected_total{source="web",reason="missing_field"} 2
waymark_events_rejected_total{source="web",reason="too_large"} 1
waymark_events_dropped_total{stage="consent",source="web",reason="consent"} 4
waymark_events_dropped_total{stage="deliver",destination="lake",reason="rule"} 5
waymark_unknown_write_key_total 7
waymark_events_delivered_total{destination="lake"} 9
waymark_events_failed_total{destination="lake"} 2
waymark_events_retried_total{destination="lake"} 2
waymark_events_dead_lettered_total{destination="lake",reason="rejected"} 1
waymark_events_dead_lettered_total{destination="lake",reason="max_age"} 1
waymark_outbox_depth{destination="lake"} 3
waymark_dead_letters{destination="lake"} 2
waymark_consent_held{destination="ads"} 6
waymark_delivery_latency_seconds_bucket{destination="lake",le="0.01"} 0
waymark_delivery_latency_seconds_bucket{destination="lake",le="0.1"} 5
waymark_delivery_latency_seconds_bucket{destination="lake",le="1"} 10
waymark_delivery_latency_seconds_bucket{destination="lake",le="+Inf"} 10
waymark_delivery_latency_seconds_sum{destination="lake"} 2.5
waymark_delivery_latency_seconds_count{destination="lake"} 10
"#;

#[test]
fn labels_with_escapes_parse() {
    let s = parse("m{a=\"x\\\"y\",b=\"p\\\\q\\nr\"} 1.5\n");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].label("a"), Some("x\"y"));
    assert_eq!(s[0].label("b"), Some("p\\q\nr"));
    assert_eq!(s[0].value, 1.5);
}

#[test]
fn a_line_that_does_not_parse_is_skipped() {
    let s = parse("good 1\nbad{a=\"x} 2\nalso_bad notanumber\n");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].name, "good");
}

#[test]
fn snapshot_folds_sources_and_destinations() {
    let s = snapshot(&parse(TEXT));
    let web = &s.sources["web"];
    assert_eq!(web.accepted, 10);
    assert_eq!(web.duplicates, 1);
    assert_eq!(web.rejected["missing_field"], 2);
    assert_eq!(web.rejected["too_large"], 1);
    assert_eq!(web.dropped["consent"], 4);
    assert_eq!(s.sources["app"].accepted, 3);
    assert_eq!(s.unknown_write_keys, 7);
    let lake = &s.destinations["lake"];
    assert_eq!(
        (
            lake.delivered,
            lake.failed,
            lake.retried,
            lake.dead_lettered
        ),
        (9, 2, 2, 2)
    );
    assert_eq!((lake.outbox_depth, lake.dead_letters), (3, 2));
    assert_eq!(s.destinations["ads"].held, 6);
    assert_eq!(lake.latency.count, 10);
    assert_eq!(lake.latency.buckets, vec![(0.01, 0), (0.1, 5), (1.0, 10)]);
    // The median sits at the top of the second bucket.
    assert!((lake.latency.p50_seconds.unwrap() - 0.1).abs() < 1e-9);
    // 99th: 9.9 of 10, interpolated in (0.1, 1].
    assert!((lake.latency.p99_seconds.unwrap() - 0.982).abs() < 1e-9);
    // A destination-level drop is not charged to a source.
    assert!(!s.sources.contains_key(""));
}

#[test]
fn quantile_of_an_empty_histogram_is_none() {
    assert_eq!(quantile(&[], 0.5), None);
    assert_eq!(quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
}

#[test]
fn quantile_past_the_last_bound_reports_that_bound() {
    assert_eq!(
        quantile(&[(1.0, 1.0), (f64::INFINITY, 10.0)], 0.99),
        Some(1.0)
    );
}

#[test]
fn snapshot_reads_the_real_exporter_output() {
    // The recorder `/metrics` renders: what the endpoint reads in production.
    let handle = crate::telemetry::install();
    metrics::counter!("waymark_events_accepted_total", "source" => "stats-test-src").increment(4);
    let s = snapshot(&parse(&handle.render()));
    assert_eq!(s.sources["stats-test-src"].accepted, 4);
}
