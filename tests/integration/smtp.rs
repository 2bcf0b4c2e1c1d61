//! SMTP against a real server: aiosmtpd (`tests/smtp/server.py`) on
//! 127.0.0.1 with certificates generated per run. Every class that can be
//! produced on loopback is covered, and accepted test emails are checked in
//! the server's spool. The server failing to start fails the tests.

pub mod cli;
mod echo;
pub mod harness;
mod probe;
mod secrets;
mod send;
