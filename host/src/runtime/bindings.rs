//! Host bindings generated from `wit/provider.wit`.

#![allow(
    missing_debug_implementations,
    reason = "generated code; the generated store/pre types have no Debug"
)]

wasmtime::component::bindgen!({
    world: "provider",
    path: "../wit",
    additional_derives: [PartialEq, Eq],
});
