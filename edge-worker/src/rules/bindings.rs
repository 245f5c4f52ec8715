//! The one `bindgen!` call: host-side types and traits generated from
//! `rules/wit/`, the only contract between the worker and rules.
//!
//! Other modules use the generated names through this module:
//! [`Rule`] (the instantiated world, with `call_init` and `call_transform`),
//! [`RulePre`], and the `types`/`log` interfaces under [`waymark::rules`].

wasmtime::component::bindgen!({
    path: "../rules/wit",
    world: "rule",
    // The event resource is our marker type: the event itself lives in the
    // store's state for the duration of one call (see host/mod.rs).
    with: {
        "waymark:rules/types.event": crate::rules::host::EventView,
    },
    // A host-side failure (an event used outside `transform`) becomes a
    // trap for this call, never a panic in the worker.
    imports: { default: trappable },
    // Values and errors are compared in tests.
    additional_derives: [PartialEq],
});
