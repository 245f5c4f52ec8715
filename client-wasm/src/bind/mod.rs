//! The JS boundary: the value type, the few JS classes the tag uses
//! (`Array`, `Object`, `Function`) and the handful of globals it reads.
//!
//! Two backends give the same names and signatures, so the rest of the
//! crate is written once:
//! - `raw` (the `bare` build that ships): a hand-written ABI. A JS value is
//!   a `u32` handle into a table in `js/glue.js`, each operation is one
//!   small import of module `e`, and the glue calls the exports `s` (start)
//!   and `r` (the router) directly.
//! - `bindgen` (the `std` build: host, clippy, docs and the
//!   wasm-bindgen-test suite): re-exports of wasm-bindgen and js-sys.
//!
//! # Design
//! wasm-bindgen's generated glue and the adapters it adds to the module were
//! about 2 KB gzipped of a 15 KB tag (issue 15): string passing in both
//! directions, an externref table with its allocator, closure shims and
//! their destructors, a generic instantiation path. The tag needs a small
//! fixed set of operations, all on plain JS values, so a handle table and
//! one line of JS per operation does the same job. Every operation that can
//! run site code (getters, setters, `toJSON`, callbacks) catches in JS and
//! answers `undefined`, so the tag never throws into the page and never
//! unwinds out of a borrow.

#[cfg(feature = "std")]
mod bindgen;
#[cfg(feature = "std")]
pub use bindgen::*;

#[cfg(not(feature = "std"))]
mod raw;
#[cfg(not(feature = "std"))]
pub use raw::*;
