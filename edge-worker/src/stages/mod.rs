//! The pipeline, one module per stage, in the order an event meets them:
//!
//! ```text
//! ingest -> normalize -> enrich -> identify -> consent -> rules -> route -> outbox -> deliver
//! ```
//!
//! [`Pipeline::ingest`] runs one request's events from normalize to the
//! outbox and returns once they are durable; [`deliver`] runs one worker per
//! destination that drains the outbox.

pub mod admit;
pub mod consent;
pub mod deliver;
pub mod enrich;
pub mod identify;
pub mod ingest;
pub mod normalize;
pub mod outbox;
pub mod route;
pub mod rows;
pub mod rules;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;

use crate::config::{Config, ConfigError, SourceConfig};
use crate::rules::RuleHost;
use crate::storage::{Storage, StorageError};
use crate::telemetry::identity::{CookieRejected, VisitorMinted};
use crate::telemetry::ingest::{DuplicatesDropped, EventsAccepted, EventsDropped, EventsRejected};
use crate::visitor::{CookieCodec, VisitorId};
use consent::{ConsentPolicy, ConsentState};
use enrich::{Enricher, IpField};
use identify::cookieless::CookielessKey;
use ingest::RawBatch;
use normalize::{normalize, NormalizeContext, Rejection};
use outbox::{CommitBuilder, Outbox};
use route::Router;
use rules::RuleChain;

/// A stage's decision about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the event on.
    Keep,
    /// Remove the event on purpose (counted, logged at debug).
    Drop {
        /// Why, for people.
        reason: String,
    },
    /// Keep the event aside in quarantine (counted, replayable).
    Quarantine {
        /// Why, for people.
        reason: String,
    },
}

/// A source, resolved by write key.
#[derive(Debug)]
pub struct Source {
    /// Its config.
    pub config: SourceConfig,
    /// Its name, shared into every stored event.
    pub name: Arc<str>,
    /// The rule chain run on each of its events before routing.
    pub rules: RuleChain,
}

/// Per-request facts the stages need besides the body.
#[derive(Debug, Default, Clone)]
pub struct RequestMeta {
    /// The client address after trusted-proxy resolution.
    pub client_ip: Option<IpAddr>,
    /// The `Cookie` header.
    pub cookie_header: Option<String>,
    /// Whether the public origin is https (cookie gets `Secure`).
    pub https: bool,
}

/// One rejected event of a request.
#[derive(Debug, Clone)]
pub struct EventError {
    /// Position in the batch.
    pub index: usize,
    /// Its `messageId`, when it had a string one.
    pub message_id: Option<String>,
    /// What was wrong.
    pub rejection: Rejection,
}

/// What became of one request's events.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// Events committed to the outbox (or dropped on purpose after validation).
    pub accepted: usize,
    /// Events already seen within the dedup window.
    pub duplicates: usize,
    /// Rejected events, now in quarantine.
    pub errors: Vec<EventError>,
    /// A `Set-Cookie` value to send back, if any.
    pub set_cookie: Option<String>,
}

/// The assembled pipeline: every stage's prepared state.
pub struct Pipeline {
    sources: HashMap<String, Arc<Source>>,
    limits: crate::config::LimitsConfig,
    cookie_purpose: String,
    cookies: CookieCodec,
    enricher: Enricher,
    consent: ConsentPolicy,
    router: Router,
    outbox: Outbox,
    identity: crate::identity::Identity,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Builds every stage from a validated config.
    pub fn build(
        config: &Config,
        storage: Arc<dyn Storage>,
        rules: &RuleHost,
    ) -> Result<Pipeline, ConfigError> {
        let sources = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let chain = rules.chain(&s.rules).map_err(|e| {
                    ConfigError::invalid(format!("sources[{i}].rules"), e.to_string())
                })?;
                let source = Source {
                    name: Arc::from(s.name.as_str()),
                    config: s.clone(),
                    rules: chain,
                };
                Ok((s.write_key.clone(), Arc::new(source)))
            })
            .collect::<Result<_, ConfigError>>()?;
        let enricher = Enricher::new().map_err(|e| ConfigError::invalid("enrich", e))?;
        Ok(Pipeline {
            sources,
            limits: config.limits.clone(),
            cookie_purpose: config.identity.cookie_purpose.clone(),
            cookies: CookieCodec::from_config(&config.identity)?,
            enricher,
            consent: ConsentPolicy::from_config(config),
            router: Router::new(&config.destinations),
            identity: crate::identity::Identity::build(&config.identity, &storage)?,
            outbox: Outbox::new(storage),
        })
    }

    /// The source a write key belongs to.
    pub fn source(&self, write_key: &str) -> Option<&Arc<Source>> {
        self.sources.get(write_key)
    }

    /// The source with `name` (for replaying stored events).
    pub fn source_named(&self, name: &str) -> Option<&Arc<Source>> {
        self.sources.values().find(|s| &*s.name == name)
    }

    /// Whether a destination named `name` is configured (for replaying
    /// events a destination's rules quarantined).
    pub fn has_destination(&self, name: &str) -> bool {
        self.router.has_destination(name)
    }

    /// Whether any source allows browser calls from `origin` (for preflight).
    pub fn any_source_allows(&self, origin: &str) -> bool {
        self.sources
            .values()
            .any(|s| s.config.allows_origin(origin))
    }

    /// Ingest limits.
    pub fn limits(&self) -> &crate::config::LimitsConfig {
        &self.limits
    }

    /// The identity graph, for the admin API.
    pub fn identity(&self) -> &crate::identity::Identity {
        &self.identity
    }

    /// The outbox, for delivery workers to subscribe to.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Runs a decoded request through normalize → outbox and returns once
    /// every accepted and rejected event is durable.
    pub async fn ingest(
        &self,
        source: &Source,
        batch: RawBatch<'_>,
        meta: &RequestMeta,
    ) -> Result<IngestOutcome, StorageError> {
        let now = Utc::now();
        let now_secs = now.timestamp();
        let mut outcome = IngestOutcome::default();

        // Identify, once per request: a verified cookie, or a new visitor.
        let existing = match meta.cookie_header.as_deref() {
            Some(header) => match self.cookies.from_header(header, now_secs) {
                Ok(found) => found,
                Err(rejection) => {
                    CookieRejected {
                        reason: rejection.code(),
                    }
                    .emit();
                    None
                }
            },
            None => None,
        };
        let visitor = match (&existing, source.config.set_cookie) {
            (Some(cookie), _) => Some(cookie.visitor.clone()),
            (None, true) => {
                VisitorMinted.emit();
                Some(VisitorId::mint())
            }
            (None, false) => None,
        };

        let received_at_text = crate::time::format_rfc3339(now);
        let cx = NormalizeContext {
            received_at: now,
            received_at_text: &received_at_text,
            batch_sent_at: batch.sent_at.as_deref(),
            max_event_bytes: self.limits.max_event_bytes,
            max_depth: self.limits.max_depth,
            // Only a verified cookie vouches for an event without ids; a
            // visitor minted for this request does not.
            has_visitor: existing.is_some(),
        };
        let ip = IpField::new(meta.client_ip, source.config.ip);
        let mut commit = CommitBuilder::new(&source.name, source.config.dedup);
        let mut cookie_consent = None;
        let mut identified = Vec::with_capacity(batch.events.len());
        let mut cookieless_key = None;
        let mut decisions = Vec::with_capacity(batch.events.len());
        for (index, raw) in batch.events.iter().enumerate() {
            // Normalize: a bad event is quarantined, the others go on.
            let mut event = match normalize(raw, &cx) {
                Ok(event) => event,
                Err(rejection) => {
                    commit.quarantine(raw.raw.get(), &rejection);
                    outcome.errors.push(EventError {
                        index,
                        message_id: message_id_of(raw.raw.get()),
                        rejection: *rejection,
                    });
                    continue;
                }
            };
            // Enrich.
            self.enricher.enrich(&mut event, &ip);
            // Consent, decided once from the signals the client sent: the
            // stages below read this decision, and a rule that edits
            // `context.consent` cannot grant anything.
            let decision = self.consent.decide(&event, &source.config.default_consent);
            // Identify.
            let cookie_state = decision.state(&self.cookie_purpose);
            if source.config.cookieless && cookie_state != ConsentState::Granted {
                // Counted without a cookie: the day's visitor key, nothing read or linked.
                let key = cookieless_key.get_or_insert_with(|| {
                    CookielessKey::new(
                        self.cookies
                            .cookieless_day_key(&now.format("%Y-%m-%d").to_string()),
                    )
                });
                let agent = event.str("context.userAgent").unwrap_or("").to_owned();
                let id = key.visitor(meta.client_ip, &agent, &source.name);
                identify::cookieless::apply(&mut event, &id);
            } else {
                // A verified cookie wins over the client's id unless its purpose is denied.
                let trusted = existing.is_some() && cookie_state != ConsentState::Denied;
                identify::apply_visitor(&mut event, visitor.as_ref(), trusted);
                // Only this stage marks an event cookieless (it is then not linked).
                let _ = event.remove("context.waymark.cookieless");
            }
            identified.push(event);
            decisions.push(decision);
        }
        let cookie_granted: Vec<bool> = decisions
            .iter()
            .map(|d| d.grants(&self.cookie_purpose))
            .collect();
        // Identify, once per request: the identity graph, profile and session.
        let visit = identify::Visit {
            visitor: visitor.as_ref(),
            cookie_known: existing.is_some(),
            cookie_granted: &cookie_granted,
            sessions: true,
        };
        let verdicts = identify::link(&self.identity, &mut identified, &visit).await?;
        let admit = admit::Admit {
            source: &source.name,
            rules: &source.rules,
            router: &self.router,
            live: self.outbox.live(),
        };
        let mut tally = admit::Tally::default();
        let mut suppressed = 0;
        for ((event, verdict), decision) in identified.into_iter().zip(verdicts).zip(decisions) {
            if verdict != Verdict::Keep {
                suppressed += 1;
                continue;
            }
            cookie_consent = Some(decision.state(&self.cookie_purpose));
            admit.admit(event, &decision, &mut commit, &mut tally);
        }

        // Outbox: one durable commit for the whole request.
        let accepted = commit.accepted_len();
        let stored = self.outbox.commit(commit).await?;
        outcome.duplicates = stored.duplicates;
        outcome.accepted = accepted - stored.duplicates;

        EventsAccepted {
            source: &source.name,
            count: outcome.accepted,
        }
        .emit();
        DuplicatesDropped {
            source: &source.name,
            count: outcome.duplicates,
        }
        .emit();
        for error in &outcome.errors {
            EventsRejected {
                source: &source.name,
                reason: error.rejection.reason,
                count: 1,
            }
            .emit();
        }
        if suppressed > 0 {
            EventsDropped {
                stage: "identify",
                source: &source.name,
                reason: "suppressed",
                count: suppressed,
            }
            .emit();
        }
        tally.emit(&source.name);

        // The cookie is set or refreshed only with its purpose granted, and
        // cleared once it is denied.
        let state = cookie_consent.unwrap_or_else(|| {
            match source.config.default_consent.get(&self.cookie_purpose) {
                Some(crate::config::ConsentDefault::Granted) => ConsentState::Granted,
                Some(crate::config::ConsentDefault::Denied) => ConsentState::Denied,
                _ => ConsentState::Pending,
            }
        });
        outcome.set_cookie = match (state, &visitor, &existing) {
            (ConsentState::Granted, Some(v), Some(cookie))
                if !self.cookies.needs_refresh(cookie.issued_at, now_secs)
                    && &cookie.visitor == v =>
            {
                None
            }
            (ConsentState::Granted, Some(v), _) if source.config.set_cookie => {
                Some(self.cookies.set_cookie(v, now_secs, meta.https))
            }
            (ConsentState::Denied, _, Some(_)) => Some(self.cookies.clear_cookie(meta.https)),
            _ => None,
        };
        Ok(outcome)
    }
}

/// The `messageId` of a raw event, when it has a string one (for error reports).
fn message_id_of(raw: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(rename = "messageId")]
        message_id: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Id>(raw).ok()?.message_id? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
