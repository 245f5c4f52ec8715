//! The pieces of a sync run (issue 18 §2–§4): preparing the plan (shared
//! with the dry run), turning each planned row into the Segment call the
//! destination receives, recovering a row's identity from that call when
//! its delivery settles, and deciding the run's final status.
//!
//! The executor loop that admits the calls through `stages::admit` and
//! waits for the outcomes builds on these.

pub mod call;
pub mod history;
pub mod outcome;
pub mod prepare;
pub mod status;

pub use call::{message_id, row_call, SyncMark, SYNC_SOURCE_PREFIX};
pub use history::history;
pub use outcome::{outcome_of, outcomes_of};
pub use prepare::{prepare, Prepared};
pub use status::final_status;

#[cfg(test)]
mod tests;
