//! Consent: the one place that decides, per purpose, what an event may be
//! used for (issue 13). The pipeline asks [`ConsentPolicy::decide`] once per
//! event; identify, the cookie and route read the [`Decision`] it returns
//! and never work consent out again.
//!
//! # The rule
//! Four signals may speak for a purpose:
//! - `context.consent.categoryPreferences.<purpose>`: `true` grants, `false` denies;
//! - the TC string in `context.consent.tcf` (a string, or an object with
//!   `tcString`), decoded by [`tcf::decode`]: a purpose mapped in
//!   `[consent.tcf]` is granted when every TCF purpose it maps to has
//!   consent, and denied otherwise;
//! - the Consent Mode fields in `context.consent.gcm` (`"granted"` /
//!   `"denied"`, or booleans): a purpose mapped in `[consent.gcm]` is denied
//!   when any of its fields is denied and granted when all are granted;
//! - Global Privacy Control (`context.consent.gpc = true`) denies `marketing`.
//!
//! A purpose is granted only when at least one signal grants it and none
//! denies it. A purpose no signal mentions takes the source's
//! `default_consent`, else it is pending. A signal that cannot be read (a
//! malformed, truncated or unsupported TC string, a Consent Mode value that
//! is neither granted nor denied) grants nothing: the purposes it maps are
//! at best pending, so a waiting destination keeps holding the event and
//! the others do not get it. The event itself is still accepted and kept,
//! and the bad signal is counted in `waymark_consent_signal_invalid_total`.
//!
//! A destination with a `tcf_vendor_id` also needs that vendor's consent
//! whenever the event carries a TC string.

pub mod tcf;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::config::{Config, ConsentConfig, ConsentDefault};
use crate::event::Event;
use crate::telemetry::consent::ConsentSignalInvalid;

/// The purpose Global Privacy Control denies.
pub const GPC_DENIED_PURPOSE: &str = "marketing";

/// The state of one purpose for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    /// The visitor agreed.
    Granted,
    /// The visitor refused (or GPC refused for them).
    Denied,
    /// Not decided yet.
    Pending,
}

impl ConsentState {
    /// The combined state of several requirements: denied if any is denied,
    /// else pending if any is pending, else granted.
    pub fn and(self, other: ConsentState) -> ConsentState {
        match (self, other) {
            (ConsentState::Denied, _) | (_, ConsentState::Denied) => ConsentState::Denied,
            (ConsentState::Pending, _) | (_, ConsentState::Pending) => ConsentState::Pending,
            _ => ConsentState::Granted,
        }
    }
}

/// The purposes the edge granted one event, as stored with it in the
/// outbox: names joined by `,`, in the policy's order. Destinations,
/// identity and the cookie read this instead of the event's own consent
/// fields, so what leaves Waymark follows the one decision made at ingest.
///
/// # Design
/// A shared string is cheap to clone into every destination's pack entry
/// and to store (`"g"` in a pack), and a lookup is a scan of a few short
/// names. An event stored before this field existed has none granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantedPurposes(Arc<str>);

impl GrantedPurposes {
    /// From the stored form (`analytics,marketing`).
    pub fn from_stored(text: &str) -> GrantedPurposes {
        GrantedPurposes(Arc::from(text))
    }

    /// From a list of purposes.
    pub fn from_list<'a>(purposes: impl IntoIterator<Item = &'a str>) -> GrantedPurposes {
        let joined: Vec<&str> = purposes.into_iter().filter(|p| !p.is_empty()).collect();
        GrantedPurposes(Arc::from(joined.join(",")))
    }

    /// Whether `purpose` was granted.
    pub fn contains(&self, purpose: &str) -> bool {
        !purpose.is_empty() && self.0.split(',').any(|p| p == purpose)
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The signal mappings and the purposes the configuration names, prepared
/// once at build.
#[derive(Debug, Clone, Default)]
pub struct ConsentPolicy {
    /// Every purpose named anywhere in the config, in a stable order.
    purposes: Vec<Arc<str>>,
    /// Per purpose (same order), the TCF purpose mask it needs, if mapped.
    tcf: Vec<Option<u32>>,
    /// Per purpose (same order), the Consent Mode fields it needs.
    gcm: Vec<Vec<String>>,
}

/// The TC string an event carried.
#[derive(Debug, Clone, Default)]
enum TcSignal {
    /// None.
    #[default]
    Absent,
    /// One that could not be decoded.
    Invalid,
    /// A decoded string.
    Valid(Arc<tcf::TcString>),
}

/// What one purpose's signals said, before the source default.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    granted: bool,
    denied: bool,
    unreadable: bool,
}

/// One event's consent, decided once.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// Each named purpose's state, in the policy's order.
    states: Vec<(Arc<str>, ConsentState)>,
    /// The TC string, for vendor checks.
    tc: TcSignal,
}

impl Decision {
    /// The state of `purpose`. A purpose the configuration never names is
    /// pending.
    pub fn state(&self, purpose: &str) -> ConsentState {
        self.states
            .iter()
            .find(|(p, _)| &**p == purpose)
            .map_or(ConsentState::Pending, |(_, s)| *s)
    }

    /// Whether `purpose` is granted.
    pub fn grants(&self, purpose: &str) -> bool {
        self.state(purpose) == ConsentState::Granted
    }

    /// The vendor's standing: granted without a TC string, granted or
    /// denied by the string's vendor consents, pending when the string
    /// could not be read.
    pub fn vendor(&self, vendor_id: u16) -> ConsentState {
        match &self.tc {
            TcSignal::Absent => ConsentState::Granted,
            TcSignal::Invalid => ConsentState::Pending,
            TcSignal::Valid(tc) if tc.vendor_consent(vendor_id) => ConsentState::Granted,
            TcSignal::Valid(_) => ConsentState::Denied,
        }
    }

    /// The combined state for a destination: every purpose in `required`,
    /// and the vendor when it has one.
    pub fn for_destination(&self, required: &[String], vendor_id: Option<u16>) -> ConsentState {
        let mut state = vendor_id.map_or(ConsentState::Granted, |id| self.vendor(id));
        for purpose in required {
            if state == ConsentState::Denied {
                break;
            }
            state = state.and(self.state(purpose));
        }
        state
    }

    /// The purposes granted, in the policy's order.
    pub fn granted(&self) -> impl Iterator<Item = &Arc<str>> {
        self.states
            .iter()
            .filter(|(_, s)| *s == ConsentState::Granted)
            .map(|(p, _)| p)
    }

    /// The purposes granted, in their stored form.
    pub fn granted_purposes(&self) -> GrantedPurposes {
        GrantedPurposes::from_list(self.granted().map(|p| &**p))
    }
}

impl ConsentPolicy {
    /// Prepares the policy from a validated config: the mappings of
    /// `[consent]` and every purpose the sources, destinations and cookie
    /// name.
    pub fn from_config(config: &Config) -> ConsentPolicy {
        let mut names: Vec<&str> = Vec::new();
        names.push(&config.identity.cookie_purpose);
        names.push(GPC_DENIED_PURPOSE);
        for d in &config.destinations {
            names.extend(d.consent.iter().map(String::as_str));
        }
        for s in &config.sources {
            names.extend(s.default_consent.keys().map(String::as_str));
        }
        ConsentPolicy::new(&config.consent, names)
    }

    /// A policy for `mappings` that knows `purposes` (and every mapped one).
    pub fn new<'a>(
        mappings: &'a ConsentConfig,
        purposes: impl IntoIterator<Item = &'a str>,
    ) -> ConsentPolicy {
        let mut names: Vec<&str> = purposes.into_iter().collect();
        names.extend(mappings.tcf.purposes.keys().map(String::as_str));
        names.extend(mappings.gcm.purposes.keys().map(String::as_str));
        names.sort_unstable();
        names.dedup();
        ConsentPolicy {
            tcf: names
                .iter()
                .map(|n| {
                    mappings.tcf.purposes.get(*n).map(|ids| {
                        ids.iter()
                            .fold(0u32, |mask, id| mask | 1 << (u32::from(*id).max(1) - 1))
                    })
                })
                .collect(),
            gcm: names
                .iter()
                .map(|n| mappings.gcm.purposes.get(*n).cloned().unwrap_or_default())
                .collect(),
            purposes: names.into_iter().map(Arc::from).collect(),
        }
    }

    /// Decides every named purpose for `event` under the source's
    /// `defaults`. Call once per event: an unreadable signal is counted here.
    pub fn decide(&self, event: &Event, defaults: &BTreeMap<String, ConsentDefault>) -> Decision {
        let prefs = event
            .get("context.consent.categoryPreferences")
            .and_then(Value::as_object);
        let gpc = event.get("context.consent.gpc").and_then(Value::as_bool) == Some(true);
        let tc = read_tc(event.get("context.consent.tcf"));
        let gcm = event.get("context.consent.gcm");
        let gcm = match gcm {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(Ok(map)),
            Some(_) => Some(Err(())),
        };
        let mut gcm_unreadable = matches!(gcm, Some(Err(())));
        let states = self
            .purposes
            .iter()
            .enumerate()
            .map(|(i, purpose)| {
                let mut t = Tally::default();
                // categoryPreferences.
                match prefs
                    .and_then(|p| p.get(&**purpose))
                    .and_then(Value::as_bool)
                {
                    Some(true) => t.granted = true,
                    Some(false) => t.denied = true,
                    None => {}
                }
                // The TC string.
                if let Some(mask) = self.tcf.get(i).copied().flatten() {
                    match &tc {
                        TcSignal::Absent => {}
                        TcSignal::Invalid => t.unreadable = true,
                        TcSignal::Valid(s) if s.purpose_consents & mask == mask => t.granted = true,
                        TcSignal::Valid(_) => t.denied = true,
                    }
                }
                // Consent Mode.
                let fields = self.gcm.get(i).map(Vec::as_slice).unwrap_or_default();
                if !fields.is_empty() {
                    match &gcm {
                        None => {}
                        Some(Err(())) => t.unreadable = true,
                        Some(Ok(map)) => {
                            let mut all = true;
                            for field in fields {
                                match map.get(field).map(gcm_value) {
                                    Some(Some(true)) => continue,
                                    Some(Some(false)) => t.denied = true,
                                    Some(None) => {
                                        t.unreadable = true;
                                        gcm_unreadable = true;
                                    }
                                    None => {}
                                }
                                all = false;
                            }
                            t.granted |= all;
                        }
                    }
                }
                // GPC.
                if gpc && &**purpose == GPC_DENIED_PURPOSE {
                    t.denied = true;
                }
                let state = if t.denied {
                    ConsentState::Denied
                } else if t.unreadable {
                    ConsentState::Pending
                } else if t.granted {
                    ConsentState::Granted
                } else {
                    match defaults.get(&**purpose) {
                        Some(ConsentDefault::Granted) => ConsentState::Granted,
                        Some(ConsentDefault::Denied) => ConsentState::Denied,
                        Some(ConsentDefault::Pending) | None => ConsentState::Pending,
                    }
                };
                (Arc::clone(purpose), state)
            })
            .collect();
        if matches!(tc, TcSignal::Invalid) {
            ConsentSignalInvalid { signal: "tcf" }.emit();
        }
        if gcm_unreadable {
            ConsentSignalInvalid { signal: "gcm" }.emit();
        }
        Decision { states, tc }
    }
}

/// `context.consent.tcf`: a TC string, or `{ "tcString": "..." }` as the
/// CMP API's `TCData` has it.
fn read_tc(value: Option<&Value>) -> TcSignal {
    let text = match value {
        None | Some(Value::Null) => return TcSignal::Absent,
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(map)) => match map.get("tcString") {
            Some(Value::String(s)) => s.as_str(),
            _ => return TcSignal::Invalid,
        },
        Some(_) => return TcSignal::Invalid,
    };
    match tcf::decode(text) {
        Ok(tc) => TcSignal::Valid(Arc::new(tc)),
        Err(error) => {
            tracing::debug!(error = %error, "TC string refused; it grants nothing.");
            TcSignal::Invalid
        }
    }
}

/// A Consent Mode value: `Some(true)` granted, `Some(false)` denied,
/// `None` unreadable.
fn gcm_value(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("granted") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("denied") => Some(false),
        _ => None,
    }
}
