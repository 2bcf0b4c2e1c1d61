//! SMTP: the host's only way out to a mail server — connection establishment
//! (DNS, TCP with `TCP_NODELAY`, implicit TLS / required STARTTLS), the staged
//! probe behind `mailplug check`, the pooled lettre transport behind
//! `mailplug test-send` and sending, and the failure classification all three
//! share.
//!
//! Nothing in here prints: callers (the CLI, later the admin API) format the
//! reports. Secrets only leave [`Secret`] on the wire, inside an AUTH exchange.

mod classify;
mod from_config;
mod hint;
mod message;
mod net;
mod pool;
mod probe;
mod session;
mod target;
mod test_send;
mod tls;
mod transaction;
mod wire;

pub use classify::{Class, Classification, Stage};
pub use from_config::{ConfigError, machine_hostname, target_for};
pub use message::{MessageError, OutgoingMessage, new_message_id, test_message};
pub use pool::{Delivery, Mailer};
pub use probe::{ProbeOptions, ProbeReport, probe};
pub use session::{StageReport, StageStatus};
pub use target::{Secret, Security, SmtpTarget, TargetError};
pub use test_send::{TestSendError, TestSendReport, test_send};
