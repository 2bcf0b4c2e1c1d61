//! `test_send`: the test email through a one-session [`Mailer`], the same
//! path real sending takes.

use serde::Serialize;

use super::classify::Classification;
use super::message::test_message;
use super::pool::Mailer;
use super::target::{SmtpTarget, TargetError};

/// Result of `mailplug test-send`.
#[derive(Debug, Clone, Serialize)]
pub struct TestSendReport {
    /// Connection name.
    pub connection: String,
    /// `host:port` used.
    pub server: String,
    /// Recipient.
    pub to: String,
    /// Message-ID of the test email.
    pub message_id: Option<String>,
    /// The classified outcome.
    pub classification: Classification,
    /// Queue id from the server's reply when accepted.
    pub queue_id: Option<String>,
    /// Configuration warnings.
    pub warnings: Vec<String>,
}

/// Sends the test email for `target` to `to` through a one-session
/// [`Mailer`] (the same path as real sending).
pub async fn test_send(target: &SmtpTarget, to: &str) -> Result<TestSendReport, TestSendError> {
    let mut single = target.clone();
    single.max_connections = 1;
    let mailer = Mailer::new(single)?;
    let message = test_message(target, to)?;
    let result = mailer.send(&message).await;
    mailer.close().await;
    let (classification, queue_id) = match result {
        Ok(d) => (d.classification, d.queue_id),
        Err(c) => (c, None),
    };
    Ok(TestSendReport {
        connection: target.connection.clone(),
        server: target.address(),
        to: to.to_owned(),
        message_id: Some(message.message_id),
        classification,
        queue_id,
        warnings: mailer.warnings().to_vec(),
    })
}

/// Input problems that stop `test_send` before any network traffic.
#[derive(Debug, thiserror::Error)]
pub enum TestSendError {
    /// The target's configuration is unusable.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// An address is invalid.
    #[error(transparent)]
    Message(#[from] super::message::MessageError),
}
