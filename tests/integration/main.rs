//! The one integration test binary: drives the real `mailplug` binary and
//! library against real components and fixtures.

mod plugins;
