//! Consent: the one place that decides, per purpose, what an event may be
//! used for (issue 13).

pub mod tcf;
