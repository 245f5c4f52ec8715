//! The pieces of a sync run (issue 18 §2–§4): preparing the plan (shared
//! with the dry run), turning each planned row into the Segment call the
//! destination receives, recovering a row's identity from that call when
//! its delivery settles, and deciding the run's final status.
//!
//! [`execute::execute`] drives a started run through them.

pub mod call;
pub mod execute;
pub mod history;
pub mod outcome;
pub mod prepare;
pub mod status;

pub use call::{message_id, row_call, SyncMark, SYNC_SOURCE_PREFIX};
pub use execute::{execute, RunContext};
pub use history::history;
pub use outcome::{outcome_of, outcomes_of};
pub use prepare::{prepare, Prepared};
pub use status::final_status;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod execute_tests;
