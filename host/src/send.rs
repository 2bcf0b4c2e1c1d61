//! Sending application mail: requests composed into queued messages
//! ([`compose`]), the connections a message may use ([`route`]), and the
//! workers that drain the queue ([`worker`]) through each connection's rate
//! limiter ([`limit`]), circuit breaker ([`breaker`]) and retry schedule
//! ([`retry`]). docs/sending.md describes the behaviour for operators.

pub mod breaker;
pub mod compose;
pub mod limit;
pub mod retry;
pub mod route;
pub mod worker;

pub use compose::{ComposeLimits, FieldError, MessageRequest, compose};
pub use worker::{SendSettings, Sending, Workers};
