//! The one integration test binary: drives the real `mailplug` binary (and
//! the library where a process boundary adds nothing) against real files,
//! servers and plugins.

mod support;
mod validate;
