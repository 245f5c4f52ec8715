//! Consent: each event's purposes are decided once, right after enrich, by
//! [`crate::consent::ConsentPolicy::decide`], from every signal it carries
//! (categoryPreferences, the TC string, Consent Mode, GPC) and the source's
//! defaults. Identify, the cookie and route read that [`Decision`]; see
//! [`crate::consent`] for the rule.

pub use crate::consent::{ConsentPolicy, ConsentState, Decision, GPC_DENIED_PURPOSE};
