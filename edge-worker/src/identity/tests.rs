//! Specification of the identity graph: a table of merge and guard cases,
//! admin repairs, privacy, sessions, and a property test against a model.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::{json, Value};

use super::activity::link_cached;
use super::graph::{link_batch, BatchContext, EventIds, Linked};
use super::key::KeyRules;
use super::profile::{load, Lookup};
use super::state::GraphState;
use super::{privacy, repair};
use crate::config::IdentityConfig;
use crate::event::Event;
use crate::stages::identify::event_ids;
use crate::storage::identity::{IdentityTx, SessionRow};

/// A graph on an in-memory database, driven one event at a time.
struct Graph {
    conn: Connection,
    state: GraphState,
    /// Each batch on a fresh [`GraphState::job`], as on a shared store.
    job_scratch: bool,
    rules: KeyRules,
    clock_ms: i64,
}

impl Graph {
    fn new() -> Graph {
        Graph::with_cache(1_000)
    }

    fn with_cache(entries: usize) -> Graph {
        // The whole store's schema: privacy deletes from the outbox, holds,
        // dead letters and quarantine too.
        let mut conn = Connection::open_in_memory().unwrap();
        crate::storage::schema::migrate_all(&mut conn).unwrap();
        Graph {
            conn,
            state: GraphState::new(entries),
            job_scratch: false,
            rules: KeyRules::from_config(&IdentityConfig::default()),
            clock_ms: 1_700_000_000_000,
        }
    }

    /// Sends one event from a browser with cookie `cookie` (if any).
    fn send(&mut self, body: Value, cookie: Option<&str>) -> Linked {
        self.batch(vec![(body, cookie)]).remove(0)
    }

    /// Links a batch and writes its activity, as every admin operation
    /// does before it reads.
    fn batch(&mut self, events: Vec<(Value, Option<&str>)>) -> Vec<Linked> {
        let linked = self.batch_unflushed(events);
        self.state.flush(&self.conn).unwrap();
        linked
    }

    /// The identity facts of a batch, as the identify stage takes them.
    fn ids(&mut self, events: Vec<(Value, Option<&str>)>) -> Vec<EventIds> {
        self.clock_ms += 1_000;
        events
            .into_iter()
            .enumerate()
            .map(|(i, (mut body, cookie))| {
                let obj = body.as_object_mut().unwrap();
                obj.entry("messageId")
                    .or_insert(json!(format!("m{}-{i}", self.clock_ms)));
                obj.entry("type").or_insert(json!("track"));
                let event = Event::from_map(obj.clone());
                event_ids(&event, &self.rules, cookie, cookie, self.clock_ms)
            })
            .collect()
    }

    fn cx(&self) -> BatchContext {
        BatchContext {
            now_ms: self.clock_ms,
            session_timeout_ms: 1_800_000,
        }
    }

    /// Links a batch on the write path, leaving its activity pending.
    fn batch_unflushed(&mut self, events: Vec<(Value, Option<&str>)>) -> Vec<Linked> {
        let ids = self.ids(events);
        let cx = self.cx();
        let tx = self.conn.unchecked_transaction().unwrap();
        let (linked, _) = if self.job_scratch {
            link_batch(&*tx, &mut GraphState::job(4), &ids, cx).unwrap()
        } else {
            link_batch(&*tx, &mut self.state, &ids, cx).unwrap()
        };
        tx.commit().unwrap();
        linked
    }

    /// Links a batch from memory alone, if it can be.
    fn cached(&mut self, events: Vec<(Value, Option<&str>)>) -> Option<Vec<Linked>> {
        let ids = self.ids(events);
        let cx = self.cx();
        link_cached(&mut self.state, &ids, cx).map(|(linked, _)| linked)
    }

    fn node_counts(&self, key: &str) -> (i64, Option<i64>) {
        self.conn
            .query_row(
                "SELECT n_track, last_seen_ms FROM identity_nodes WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    fn stored_session(&self, key: &str) -> Option<SessionRow> {
        self.conn.session(key).unwrap()
    }

    fn profile_of(&self, key: &str) -> Option<String> {
        self.conn.node_profile(key).unwrap()
    }

    fn merges(&self) -> i64 {
        self.conn
            .query_row("SELECT COUNT(*) FROM identity_merges", [], |r| r.get(0))
            .unwrap()
    }

    fn refusals(&self) -> Vec<(String, String)> {
        let mut stmt = self
            .conn
            .prepare("SELECT reason, COALESCE(message_id, '') FROM identity_refusals ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// Puts events in the outbox of destination `d`, as one request.
fn enqueue(conn: &Connection, events: &[(&str, &str)]) {
    let meta = crate::storage::outbox::PackMeta::new("d", "web", 0);
    let events: Vec<(&str, &str, &str)> = events.iter().map(|(m, e)| (*m, "", *e)).collect();
    crate::storage::outbox::enqueue(conn, &meta, &events).unwrap();
}

fn profile_id(linked: &Linked) -> String {
    match linked {
        Linked::Profile { profile_id, .. } => profile_id.to_string(),
        other => panic!("expected a profile, got {other:?}"),
    }
}

// ---- The table of merge and guard cases -------------------------------------

#[test]
fn an_anonymous_visitor_keeps_its_profile_when_it_identifies() {
    let mut g = Graph::new();
    let before = profile_id(&g.send(json!({"type":"page"}), Some("c1")));
    let after = profile_id(&g.send(json!({"type":"identify","userId":"u1"}), Some("c1")));
    assert_eq!(before, after);
    assert_eq!(g.profile_of("user:u1"), Some(before));
    assert_eq!(g.merges(), 0, "joining a new identifier is not a merge");
}

#[test]
fn the_same_user_on_two_devices_is_one_profile_and_the_older_id_survives() {
    let mut g = Graph::new();
    let first = profile_id(&g.send(json!({"type":"identify","userId":"u1"}), Some("phone")));
    let laptop_anon = profile_id(&g.send(json!({"type":"page"}), Some("laptop")));
    assert_ne!(first, laptop_anon);
    let laptop = profile_id(&g.send(
        json!({"type":"identify","userId":"u1","messageId":"merge-me"}),
        Some("laptop"),
    ));
    assert_eq!(laptop, first, "the older profile id survives");
    assert_eq!(g.profile_of("cookie:laptop"), Some(first.clone()));
    assert_eq!(g.profile_of("cookie:phone"), Some(first.clone()));
    // The merge is logged with its cause, and the absorbed id still resolves.
    let view = load(&g.conn, &first).unwrap().unwrap();
    assert_eq!(view.merges.len(), 1);
    assert_eq!(view.merges[0].message_id.as_deref(), Some("merge-me"));
    assert_eq!(view.merges[0].absorbed, laptop_anon);
    assert_eq!(view.merged_ids, vec![laptop_anon.clone()]);
    assert_eq!(g.conn.current_profile(&laptop_anon).unwrap(), Some(first));
}

#[test]
fn a_second_user_on_the_same_browser_is_refused_and_logged() {
    let mut g = Graph::new();
    let alice = profile_id(&g.send(json!({"type":"identify","userId":"alice"}), Some("shared")));
    let bob = profile_id(&g.send(
        json!({"type":"identify","userId":"bob","messageId":"bob-login"}),
        Some("shared"),
    ));
    assert_ne!(alice, bob, "two userIds never merge automatically");
    assert_eq!(g.profile_of("cookie:shared"), Some(alice));
    assert_eq!(g.profile_of("user:bob"), Some(bob));
    assert_eq!(
        g.refusals(),
        vec![("conflicting_user".to_owned(), "bob-login".to_owned())]
    );
}

#[test]
fn conflicting_identifies_through_an_anonymous_id_are_refused() {
    let mut g = Graph::new();
    let a = profile_id(&g.send(json!({"userId":"u1","anonymousId":"a1"}), None));
    let b = profile_id(&g.send(json!({"userId":"u2","anonymousId":"a2"}), None));
    // An event claiming a1 and a2 together would join u1 and u2.
    let c = profile_id(&g.send(
        json!({"anonymousId":"a1","context":{"traits":{}}}),
        Some("c9"),
    ));
    assert_eq!(c, a);
    g.send(json!({"anonymousId":"a2"}), Some("c9"));
    assert_ne!(g.profile_of("user:u1"), g.profile_of("user:u2"));
    assert_eq!(g.profile_of("cookie:c9"), Some(a));
    assert_eq!(g.profile_of("anon:a2"), Some(b));
    assert_eq!(g.refusals().len(), 1);
}

#[test]
fn junk_ids_never_link() {
    let mut g = Graph::new();
    for (i, junk) in [
        "undefined",
        "null",
        "0",
        "-1",
        "anonymous",
        "guest",
        "",
        "  ",
    ]
    .iter()
    .enumerate()
    {
        let c1 = format!("x{i}");
        let c2 = format!("y{i}");
        let a = profile_id(&g.send(json!({"userId": junk, "anonymousId": junk}), Some(&c1)));
        let b = profile_id(&g.send(json!({"userId": junk, "anonymousId": junk}), Some(&c2)));
        assert_ne!(a, b, "junk id {junk:?} linked two browsers");
    }
    let nodes: i64 = g
        .conn
        .query_row(
            "SELECT COUNT(*) FROM identity_nodes WHERE key NOT LIKE 'cookie:%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(nodes, 0);
    // With no usable identifier at all, the event is simply not linked.
    assert_eq!(g.send(json!({"userId":"null"}), None), Linked::Unlinked);
}

#[test]
fn configured_junk_ids_never_link() {
    let mut g = Graph::new();
    g.rules = KeyRules::from_config(&IdentityConfig {
        junk_ids: vec!["N/A".into()],
        ..IdentityConfig::default()
    });
    assert_eq!(g.send(json!({"userId":"n/a"}), None), Linked::Unlinked);
}

#[test]
fn a_chain_of_aliases_is_one_profile() {
    let mut g = Graph::new();
    let p = profile_id(&g.send(json!({"type":"identify","userId":"a"}), Some("c1")));
    g.send(json!({"type":"alias","userId":"b","previousId":"a"}), None);
    g.send(json!({"type":"alias","userId":"c","previousId":"b"}), None);
    g.send(
        json!({"type":"alias","userId":"d","previousId":"anon-unknown"}),
        None,
    );
    for u in ["a", "b", "c"] {
        assert_eq!(
            g.profile_of(&format!("user:{u}")),
            Some(p.clone()),
            "user {u}"
        );
    }
    assert_eq!(g.profile_of("user:d"), g.profile_of("anon:anon-unknown"));
    assert_ne!(g.profile_of("user:d"), Some(p));
}

#[test]
fn alias_merges_an_anonymous_profile_into_a_user() {
    let mut g = Graph::new();
    let user = profile_id(&g.send(json!({"type":"identify","userId":"u1"}), Some("c1")));
    let anon = profile_id(&g.send(json!({"anonymousId":"a9"}), None));
    let after = profile_id(&g.send(
        json!({"type":"alias","userId":"u1","previousId":"a9"}),
        None,
    ));
    assert_eq!(after, user);
    assert_eq!(g.profile_of("anon:a9"), Some(user.clone()));
    let view = load(&g.conn, &user).unwrap().unwrap();
    assert_eq!(view.merges[0].cause, "alias");
    assert_eq!(view.merges[0].absorbed, anon);
}

#[test]
fn alias_between_two_users_is_refused() {
    let mut g = Graph::new();
    let a = profile_id(&g.send(json!({"userId":"u1"}), None));
    let b = profile_id(&g.send(json!({"userId":"u2"}), None));
    g.send(
        json!({"type":"alias","userId":"u2","previousId":"u1"}),
        None,
    );
    assert_eq!(g.profile_of("user:u1"), Some(a));
    assert_eq!(g.profile_of("user:u2"), Some(b));
    assert_eq!(g.refusals().len(), 1);
}

#[test]
fn a_hashed_email_links_anonymous_browsers_but_not_two_users() {
    let mut g = Graph::new();
    let a = profile_id(&g.send(
        json!({"type":"identify","traits":{"email":"Ada@Example.com"}}),
        Some("c1"),
    ));
    let b = profile_id(&g.send(
        json!({"type":"identify","traits":{"email":"ada@example.com "}}),
        Some("c2"),
    ));
    assert_eq!(a, b);
    let stored: Vec<String> = g.conn.profile_nodes(&a).unwrap();
    assert!(
        stored.iter().all(|k| !k.contains('@')),
        "emails are stored hashed: {stored:?}"
    );
    // Two users sharing an email stay apart.
    let u1 = profile_id(&g.send(
        json!({"type":"identify","userId":"u1","traits":{"email":"x@y.z"}}),
        None,
    ));
    let u2 = profile_id(&g.send(
        json!({"type":"identify","userId":"u2","traits":{"email":"x@y.z"}}),
        None,
    ));
    assert_ne!(u1, u2);
}

#[test]
fn events_of_one_batch_carry_the_final_profile() {
    let mut g = Graph::new();
    let phone = profile_id(&g.send(json!({"type":"identify","userId":"u1"}), Some("phone")));
    let out = g.batch(vec![
        (json!({"type":"page"}), Some("laptop")),
        (json!({"type":"identify","userId":"u1"}), Some("laptop")),
    ]);
    assert_eq!(profile_id(&out[0]), phone);
    assert_eq!(profile_id(&out[1]), phone);
}

#[test]
fn traits_merge_with_the_latest_timestamp_winning() {
    let mut g = Graph::new();
    g.send(
        json!({"type":"identify","userId":"u1","traits":{"plan":"pro","name":"Ada"},"timestamp":"2024-01-02T00:00:00Z"}),
        Some("c1"),
    );
    // An older event arriving late does not overwrite.
    g.send(
        json!({"type":"identify","userId":"u1","traits":{"plan":"free"},"timestamp":"2024-01-01T00:00:00Z"}),
        Some("c1"),
    );
    g.send(
        json!({"type":"identify","traits":{"plan":"team"},"timestamp":"2024-01-03T00:00:00Z"}),
        Some("c1"),
    );
    let p = g.profile_of("user:u1").unwrap();
    let view = load(&g.conn, &p).unwrap().unwrap();
    assert_eq!(view.traits.get("plan"), Some(&json!("team")));
    assert_eq!(view.traits.get("name"), Some(&json!("Ada")));
    assert_eq!(view.event_counts.get("identify"), Some(&json!(3)));
    assert_eq!(view.first_seen.as_deref(), Some("2024-01-01T00:00:00.000Z"));
    assert_eq!(view.last_seen.as_deref(), Some("2024-01-03T00:00:00.000Z"));
}

#[test]
fn sessions_end_after_thirty_minutes_of_inactivity() {
    let mut g = Graph::new();
    let at = |t: &str| json!({"type":"page","timestamp": t});
    let session = |l: Linked| match l {
        Linked::Profile {
            session: Some(s), ..
        } => s,
        other => panic!("{other:?}"),
    };
    let s1 = session(g.send(at("2024-01-01T10:00:00Z"), Some("c1")));
    let s2 = session(g.send(at("2024-01-01T10:29:00Z"), Some("c1")));
    let s3 = session(g.send(at("2024-01-01T11:00:00Z"), Some("c1")));
    assert!(s1.start && !s2.start && s3.start);
    assert_eq!((s1.id, s1.count), (s2.id, 1));
    assert_eq!(s3.count, 2);
    assert_ne!(s3.id, s1.id);
}

// ---- Admin repairs ------------------------------------------------------------

#[test]
fn split_undoes_a_merge_and_keeps_it_undone() {
    let mut g = Graph::new();
    let first = profile_id(&g.send(json!({"type":"identify","userId":"u1"}), Some("phone")));
    let second = profile_id(&g.send(json!({"type":"page"}), Some("kiosk")));
    g.send(json!({"type":"identify","userId":"u1"}), Some("kiosk"));
    let view = load(&g.conn, &first).unwrap().unwrap();
    let merge_id = view.merges[0].id;

    let out = repair::split(&g.conn, &mut g.state, &first, merge_id, "ops").unwrap();
    assert_eq!(out.profiles.len(), 2);
    assert_eq!(g.profile_of("cookie:phone"), Some(first.clone()));
    assert_eq!(g.profile_of("user:u1"), Some(first.clone()));
    assert_eq!(g.profile_of("cookie:kiosk"), Some(second.clone()));
    // The same pair does not merge again by itself.
    let again = profile_id(&g.send(json!({"type":"identify","userId":"u1"}), Some("kiosk")));
    assert_eq!(again, first, "the userId decides the event's profile");
    assert_eq!(g.profile_of("cookie:kiosk"), Some(second.clone()));
    assert!(g.refusals().iter().any(|(r, _)| r == "split_by_admin"));
    // Splitting twice is refused.
    assert!(repair::split(&g.conn, &mut g.state, &first, merge_id, "ops").is_err());
    // An admin can still merge them.
    let merged = repair::force_merge(
        &g.conn,
        &mut g.state,
        &second,
        &first,
        "ops",
        Some("same person"),
    )
    .unwrap();
    assert_eq!(merged.id, first);
    assert_eq!(g.profile_of("cookie:kiosk"), Some(first));
}

#[test]
fn force_merge_crosses_the_user_guard() {
    let mut g = Graph::new();
    let a = profile_id(&g.send(json!({"userId":"u1"}), None));
    let b = profile_id(&g.send(json!({"userId":"u2"}), None));
    let merged = repair::force_merge(&g.conn, &mut g.state, &b, &a, "ops", None).unwrap();
    assert_eq!(merged.id, a);
    assert_eq!(merged.merges[0].cause, "admin");
    assert_eq!(merged.merges[0].actor.as_deref(), Some("ops"));
    assert!(repair::force_merge(&g.conn, &mut g.state, &a, &b, "ops", None).is_err());
}

// ---- Privacy ------------------------------------------------------------------

#[test]
fn delete_removes_the_person_and_suppresses_their_identifiers() {
    let mut g = Graph::new();
    let p = profile_id(&g.send(
        json!({"type":"identify","userId":"u1","traits":{"email":"a@b.c","name":"A"}}),
        Some("c1"),
    ));
    let other = profile_id(&g.send(json!({"userId":"u2"}), Some("c2")));
    let event = json!({"userId":"u1","context":{"waymark":{"profileId": p}}}).to_string();
    enqueue(&g.conn, &[("m", &event), ("n", r#"{"userId":"u2"}"#)]);
    let report = privacy::delete(
        &g.conn,
        &mut g.state,
        &Lookup::VisitorId("c1".into()),
        "dpo",
    )
    .unwrap();
    assert_eq!(report.profile_id, p);
    assert_eq!(report.outbox_events, 1);
    assert_eq!(report.identifiers, 3);
    assert_eq!(g.profile_of("user:u1"), None);
    assert!(load(&g.conn, &p).unwrap().is_none());
    let traits: i64 = g
        .conn
        .query_row("SELECT COUNT(*) FROM identity_traits", [], |r| r.get(0))
        .unwrap();
    assert_eq!(traits, 0);
    // Later events with any of the identifiers are suppressed; others are not.
    g.state.clear();
    assert_eq!(
        g.send(json!({"userId":"u1"}), Some("new-cookie")),
        Linked::Suppressed
    );
    assert_eq!(
        g.send(json!({"type":"page"}), Some("c1")),
        Linked::Suppressed
    );
    assert_eq!(
        g.send(json!({"type":"identify","traits":{"email":"A@B.C"}}), None),
        Linked::Suppressed
    );
    assert_eq!(profile_id(&g.send(json!({"userId":"u2"}), None)), other);
    // Nothing of the suppressed events was linked.
    assert_eq!(g.profile_of("cookie:new-cookie"), None);
    // The audit names the person only by hash.
    let audit = privacy::audit_log(&g.conn, 10).unwrap();
    assert_eq!(audit[0].action, "delete");
    assert_eq!(audit[0].actor, "dpo");
    assert!(
        audit[0].target.starts_with("visitorId:sha256:"),
        "{}",
        audit[0].target
    );
    assert!(!audit[0].detail.to_string().contains("user:u1"));
}

#[test]
fn export_holds_everything_on_the_person_and_is_audited() {
    let mut g = Graph::new();
    let p = profile_id(&g.send(
        json!({"type":"identify","userId":"u1","traits":{"name":"A"}}),
        Some("c1"),
    ));
    let event = json!({"userId":"u1","context":{"waymark":{"profileId": p}}}).to_string();
    enqueue(&g.conn, &[("m", &event)]);
    let export = privacy::export(&g.conn, &Lookup::UserId("u1".into()), "dpo").unwrap();
    assert_eq!(export.profile.id, p);
    assert_eq!(export.undelivered_events.len(), 1);
    assert_eq!(export.traits.len(), 1);
    assert_eq!(export.sessions.len(), 1);
    assert_eq!(privacy::audit_log(&g.conn, 10).unwrap()[0].action, "export");
}

// ---- Activity: counters and sessions are written behind ---------------------

#[test]
fn activity_waits_in_memory_until_flushed() {
    let mut g = Graph::new();
    g.batch_unflushed(vec![(json!({"anonymousId":"a1"}), Some("c1"))]);
    g.batch_unflushed(vec![(json!({"anonymousId":"a1"}), Some("c1"))]);
    // The links are written at once; the counts and session are not.
    assert!(g.profile_of("anon:a1").is_some());
    assert_eq!(g.node_counts("anon:a1"), (0, None));
    assert_eq!(g.stored_session("cookie:c1"), None);
    assert_eq!(g.state.flush(&g.conn).unwrap(), 2);
    assert_eq!(g.node_counts("anon:a1"), (2, Some(g.clock_ms)));
    let session = g.stored_session("cookie:c1").unwrap();
    assert_eq!((session.count, session.last_activity_ms), (1, g.clock_ms));
    // Nothing is left to write.
    assert_eq!(g.state.flush(&g.conn).unwrap(), 0);
}

#[test]
fn activity_put_back_after_a_failed_write_adds_up_and_keeps_the_newest_session() {
    let mut g = Graph::new();
    g.batch_unflushed(vec![(json!({"anonymousId":"a1"}), Some("c1"))]);
    g.batch_unflushed(vec![(json!({"anonymousId":"a1"}), Some("c1"))]);
    // A flush takes the activity; meanwhile another event is recorded; the write fails.
    let taken = g.state.take_pending();
    g.batch_unflushed(vec![(json!({"anonymousId":"a1"}), Some("c1"))]);
    g.state.restore_pending(taken);
    g.state.flush(&g.conn).unwrap();
    assert_eq!(g.node_counts("anon:a1"), (3, Some(g.clock_ms)));
    assert_eq!(
        g.stored_session("cookie:c1").unwrap().last_activity_ms,
        g.clock_ms
    );
}

#[test]
fn a_jobs_reads_answer_whether_a_request_is_known_as_the_store_does() {
    let mut g = Graph::new();
    g.batch(vec![(json!({"anonymousId":"a1"}), Some("c1"))]);
    let returning = vec![(json!({"type":"page","anonymousId":"a1"}), Some("c1"))];
    let new = vec![(json!({"type":"page","anonymousId":"a2"}), Some("c2"))];
    let mixed = vec![returning[0].clone(), new[0].clone()];
    for (events, expected) in [(returning, true), (new, false), (mixed, false)] {
        let ids = g.ids(events);
        let query = super::activity::known_query(&ids, g.cx()).expect("a light request");
        let (nodes, sessions) = super::graph::named_keys(&ids);
        let mut scratch = GraphState::job(nodes.len() + sessions.len());
        // Before the reads nothing can be answered from them.
        assert_eq!(scratch.known_from_reads(&query), None);
        scratch.prefetch(&g.conn, nodes, sessions, true).unwrap();
        assert_eq!(scratch.known_from_reads(&query), Some(expected));
        assert_eq!(query.is_known_in(&g.conn).unwrap(), expected);
    }
}

#[test]
fn a_returning_visitor_is_linked_from_memory_like_the_write_path() {
    let mut g = Graph::new();
    let first = g.batch(vec![(json!({"anonymousId":"a1"}), Some("c1"))]);
    let p = profile_id(&first[0]);
    let cached = g
        .cached(vec![
            (json!({"anonymousId":"a1"}), Some("c1")),
            (json!({"type":"page","anonymousId":"a1"}), Some("c1")),
        ])
        .expect("every identifier is known");
    for linked in &cached {
        match linked {
            Linked::Profile {
                profile_id,
                session: Some(s),
            } => {
                assert_eq!(**profile_id, *p);
                assert_eq!((s.count, s.start), (1, false));
            }
            other => panic!("expected a profile with a session, got {other:?}"),
        }
    }
    // Its activity is pending like the write path's, and written by the flush.
    g.state.flush(&g.conn).unwrap();
    assert_eq!(g.node_counts("anon:a1").0, 2);
    // A session that timed out starts the next one, from memory too.
    g.clock_ms += 31 * 60 * 1_000;
    match &g
        .cached(vec![(json!({"anonymousId":"a1"}), Some("c1"))])
        .unwrap()[0]
    {
        Linked::Profile {
            session: Some(s), ..
        } => assert_eq!((s.count, s.start), (2, true)),
        other => panic!("expected a new session, got {other:?}"),
    }
}

#[test]
fn anything_that_changes_the_graph_goes_to_the_write_path() {
    let mut g = Graph::new();
    g.batch(vec![(json!({"anonymousId":"a1"}), Some("c1"))]);
    g.batch(vec![(json!({"anonymousId":"a2"}), Some("c2"))]);
    // A new identifier, traits to keep, an alias, two profiles to merge.
    for (event, cookie) in [
        (json!({"anonymousId":"a9"}), Some("c1")),
        (
            json!({"anonymousId":"a1","context":{"traits":{"email":"x@y.z"}}}),
            Some("c1"),
        ),
        (
            json!({"type":"alias","userId":"u1","previousId":"a1"}),
            Some("c1"),
        ),
        (json!({"anonymousId":"a2"}), Some("c1")),
    ] {
        assert_eq!(g.cached(vec![(event.clone(), cookie)]), None, "{event}");
    }
    // Nothing was recorded for the refused requests.
    assert_eq!(g.state.flush(&g.conn).unwrap(), 0);
}

#[test]
fn deleting_a_person_drops_their_pending_activity() {
    let mut g = Graph::new();
    g.batch(vec![(json!({"userId":"u1"}), Some("c1"))]);
    g.cached(vec![(json!({"userId":"u1"}), Some("c1"))])
        .expect("known visitor");
    privacy::delete(&g.conn, &mut g.state, &Lookup::UserId("u1".into()), "dpo").unwrap();
    g.state.flush(&g.conn).unwrap();
    assert_eq!(g.stored_session("cookie:c1"), None);
}

// ---- Property: profiles are the connected components of the allowed links ------

/// An independent model of the rules: union-find over identifiers.
#[derive(Default)]
struct Model {
    parent: HashMap<String, String>,
}

impl Model {
    fn find(&mut self, k: &str) -> String {
        let p = self.parent.get(k).cloned().unwrap_or_else(|| k.to_owned());
        if p == k {
            return p;
        }
        let root = self.find(&p);
        self.parent.insert(k.to_owned(), root.clone());
        root
    }

    fn has_user(&mut self, root: &str) -> bool {
        let keys: Vec<String> = self.parent.keys().cloned().collect();
        keys.iter()
            .any(|k| k.starts_with("user:") && self.find(k) == root)
    }

    fn apply(&mut self, keys: &[String], user_seed: bool) {
        let mut group: Option<String> = None;
        let mut has_user = false;
        let mut refused: Vec<String> = Vec::new();
        let mut new = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if !self.parent.contains_key(k) {
                has_user |= i == 0 && user_seed;
                new.push(k.clone());
                continue;
            }
            let p = self.find(k);
            if group.as_ref() == Some(&p) || refused.contains(&p) {
                continue;
            }
            let p_user = self.has_user(&p);
            if has_user && p_user {
                refused.push(p);
                continue;
            }
            if let Some(g) = &group {
                self.parent.insert(p.clone(), g.clone());
            } else {
                group = Some(p);
            }
            has_user |= p_user;
        }
        let root = group.unwrap_or_else(|| new[0].clone());
        for k in new {
            self.parent.insert(k.clone(), k.clone());
            if k != root {
                self.parent.insert(k, root.clone());
            }
        }
    }

    fn partition(&mut self) -> BTreeSet<BTreeSet<String>> {
        let keys: Vec<String> = self.parent.keys().cloned().collect();
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for k in keys {
            let root = self.find(&k);
            groups.entry(root).or_default().insert(k);
        }
        groups.into_values().collect()
    }
}

fn arb_event() -> impl Strategy<Value = (Value, Option<String>)> {
    let id = |prefix: &'static str, n: u8| (0..n).prop_map(move |i| format!("{prefix}{i}"));
    (
        prop::option::of(prop_oneof![id("u", 4), Just("undefined".to_owned())]),
        prop::option::of(id("a", 4)),
        prop::option::of(id("e", 3)),
        prop::option::of(id("c", 4)),
        prop::option::of(id("u", 4)),
        0..4u8,
    )
        .prop_map(|(user, anon, email, cookie, previous, kind)| {
            let mut body = serde_json::Map::new();
            let kind = match (kind, &previous, &user) {
                (0, Some(p), Some(_)) => {
                    body.insert("previousId".into(), json!(p));
                    "alias"
                }
                (1, _, _) => "identify",
                _ => "track",
            };
            body.insert("type".into(), json!(kind));
            if let Some(u) = user {
                body.insert("userId".into(), json!(u));
            }
            if let Some(a) = anon {
                body.insert("anonymousId".into(), json!(a));
            }
            if let Some(e) = email {
                body.insert(
                    "context".into(),
                    json!({"traits": {"email": format!("{e}@x.y")}}),
                );
            }
            (Value::Object(body), cookie)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn profiles_are_the_connected_components_of_the_allowed_links(
        batches in prop::collection::vec(prop::collection::vec(arb_event(), 1..4), 1..12)
    ) {
        // A tiny cache, so eviction is exercised too.
        components_match_the_model(Graph::with_cache(16), batches)?;
    }

    #[test]
    fn a_shared_stores_job_scratch_links_as_the_single_writer_does(
        batches in prop::collection::vec(prop::collection::vec(arb_event(), 1..4), 1..12)
    ) {
        // Every batch read up front into a fresh scratch (of a tiny cache).
        let mut g = Graph::with_cache(16);
        g.job_scratch = true;
        components_match_the_model(g, batches)?;
    }
}

/// Links `batches` on `g` and checks its profiles against the model's.
fn components_match_the_model(
    mut g: Graph,
    batches: Vec<Vec<(Value, Option<String>)>>,
) -> Result<(), TestCaseError> {
    {
        let mut model = Model::default();
        for batch in batches {
            for (body, cookie) in &batch {
                let mut b = body.clone();
                b.as_object_mut()
                    .unwrap()
                    .insert("messageId".into(), json!("m"));
                let ids = event_ids(
                    &Event::from_map(b.as_object().unwrap().clone()),
                    &g.rules,
                    cookie.as_deref(),
                    cookie.as_deref(),
                    0,
                );
                let mut keys = ids.keys.clone();
                if let Some(prev) = &ids.previous_id {
                    let known = ["user", "anon", "cookie"]
                        .iter()
                        .map(|k| format!("{k}:{prev}"))
                        .find(|k| model.parent.contains_key(k));
                    let pk = known.unwrap_or_else(|| format!("anon:{prev}"));
                    if !keys.contains(&pk) {
                        let at = usize::from(keys.first().is_some_and(|k| k.starts_with("user:")));
                        keys.insert(at, pk);
                    }
                }
                if !keys.is_empty() {
                    model.apply(&keys, ids.user_seed);
                }
            }
            let refs = batch
                .iter()
                .map(|(b, c)| (b.clone(), c.as_deref()))
                .collect();
            g.batch(refs);
        }
        // 1. The store's profiles equal the model's components.
        let mut stored: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut stmt = g
            .conn
            .prepare("SELECT key, profile_id FROM identity_nodes")
            .unwrap();
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (k, p) in &rows {
            stored.entry(p.clone()).or_default().insert(k.clone());
        }
        let stored: BTreeSet<BTreeSet<String>> = stored.into_values().collect();
        prop_assert_eq!(&stored, &model.partition());
        // 2. They are also the connected components of the active links,
        //    which form a forest (one link fewer than nodes per profile).
        let links: i64 = g
            .conn
            .query_row(
                "SELECT COUNT(*) FROM identity_links WHERE active = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        prop_assert_eq!(links as usize, rows.len() - stored.len());
        let mut by_links = Model::default();
        for (k, _) in &rows {
            by_links.parent.insert(k.clone(), k.clone());
        }
        let mut stmt = g
            .conn
            .prepare("SELECT a, b FROM identity_links WHERE active = 1")
            .unwrap();
        for (a, b) in stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(Result::unwrap)
        {
            let (ra, rb) = (by_links.find(&a), by_links.find(&b));
            if ra != rb {
                by_links.parent.insert(ra, rb);
            }
        }
        prop_assert_eq!(&by_links.partition(), &stored);
    }
    Ok(())
}
