//! SMTP: the host's only way out to a mail server — connection establishment
//! (DNS, TCP with `TCP_NODELAY`, implicit TLS / required STARTTLS), the staged
//! probe behind `mailplug check`, the pooled lettre transport behind
//! `mailplug test-send` and sending, and the failure classification all three
//! share.
//!
//! Nothing in here prints: callers (the CLI, the admin API) format the
//! reports. Secrets only leave [`Secret`] on the wire, inside an AUTH
//! exchange; everything that leaves this module (trace lines, stage details,
//! classifications, reports) has passed through the target's [`Redactor`]
//! first, in case the server echoes them.

mod classify;
mod from_config;
mod hint;
pub(crate) mod message;
mod net;
mod pool;
mod probe;
mod redact;
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
pub use redact::{MARKER as REDACTED, Redactor};
pub use session::{StageReport, StageStatus};
pub use target::{Secret, Security, SmtpTarget, TargetError};
pub use test_send::{TestSendError, TestSendReport, test_send};
pub use tls::{MAX_CA_FILE_BYTES, read_ca_file};
