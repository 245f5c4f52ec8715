//! Waymark's edge worker: a first-party collector for Segment Spec events.
//!
//! Events arrive over Segment's HTTP Tracking API and flow through one
//! pipeline of stages (see [`stages`]): ingest decodes the body, normalize
//! validates it against the Segment Spec, enrich adds user agent and IP
//! fields, identify ties it to the signed `wm_vid` visitor cookie
//! ([`visitor`]), route applies filters and consent, and the outbox commits
//! it durably to the embedded store ([`storage`]) before the request is
//! acknowledged. One delivery worker per destination then drains the outbox
//! ([`destinations`]).
//!
//! The principal types: [`Config`] (the `waymark.toml` reference), [`App`]
//! (assembles and serves), [`Pipeline`] (the stages), [`Event`] (what flows
//! through them) and [`Storage`] (the narrow store boundary).
//!
//! ```
//! let config = waymark::Config::embedded_default();
//! assert_eq!(config.sources[0].write_key, "wk_demo");
//! ```

pub mod app;
pub mod config;
pub mod consent;
pub mod destinations;
pub mod event;
pub mod http;
pub mod identity;
pub mod rules;
pub mod stages;
pub mod storage;
pub mod syncs;
pub(crate) mod telemetry;
pub mod time;
pub mod visitor;

pub use app::App;
pub use config::Config;
pub use event::Event;
pub use stages::{Pipeline, Verdict};
pub use storage::Storage;
