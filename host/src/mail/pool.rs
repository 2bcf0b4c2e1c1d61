//! The sending path: a bounded pool of lettre SMTP sessions per connection
//! (`limits.max_connections`), each opened by mailplug's own staged code
//! (so sockets have `TCP_NODELAY` and failures are classified), then driven
//! by lettre command by command so every failure knows its stage.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::Rset;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::classify::{Class, Classification, Stage};
use super::hint::hint;
use super::message::OutgoingMessage;
use super::net::Replay;
use super::redact::Redactor;
use super::session::{Recorder, open};
use super::target::{SmtpTarget, TargetError};
use super::tls::TlsSetup;
use super::transaction::{Failure, Session, timed, transaction};

/// Idle sessions older than this are closed instead of reused: servers drop
/// idle clients after a few minutes (RFC 5321 suggests 5), and a reused
/// session that the server already closed costs a failed round trip.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// A message the server accepted.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// `accepted` at the DATA stage, with the server's final reply.
    pub classification: Classification,
    /// Queue id parsed from the reply ("queued as X", "id=X"), if present.
    pub queue_id: Option<String>,
    /// The message's Message-ID.
    pub message_id: String,
}

/// One connection's SMTP sender: at most `max_connections` concurrent
/// sessions, idle sessions reused.
#[derive(Debug, Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: SmtpTarget,
    tls: TlsSetup,
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    warnings: Vec<String>,
    /// Applied to every outcome `send` returns and to the session trace.
    redactor: Redactor,
}

struct Idle {
    session: Session,
    since: Instant,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Validates `target` and builds its TLS setup; no network yet.
    pub fn new(target: SmtpTarget) -> Result<Self, TargetError> {
        let redactor = Redactor::for_target(&target);
        let warnings = redactor.strings(target.validate()?);
        let tls = TlsSetup::new(&target)?;
        Ok(Mailer {
            inner: Arc::new(Inner {
                permits: Semaphore::new(target.max_connections.min(Semaphore::MAX_PERMITS)),
                target,
                tls,
                idle: Mutex::new(Vec::new()),
                warnings,
                redactor,
            }),
        })
    }

    /// Configuration warnings for this target.
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// The target this mailer sends through.
    pub fn target(&self) -> &SmtpTarget {
        &self.inner.target
    }

    /// Sends one message, waiting for a free session slot. Returns the
    /// accepted delivery or the classified failure, either one redacted:
    /// this is the only way an outcome leaves the sending path.
    pub async fn send(&self, message: &OutgoingMessage) -> Result<Delivery, Classification> {
        let r = &self.inner.redactor;
        match self.deliver(message).await {
            Ok(d) => Ok(Delivery {
                classification: r.classification(d.classification),
                queue_id: d.queue_id.map(|q| r.string(q)),
                message_id: d.message_id,
            }),
            Err(c) => Err(r.classification(c)),
        }
    }

    async fn deliver(&self, message: &OutgoingMessage) -> Result<Delivery, Classification> {
        let inner = &self.inner;
        let _permit = inner.permits.acquire().await.map_err(|_| {
            Classification::local(
                Class::NetworkError,
                Stage::Connect,
                "mailer is shut down",
                "the mailer was closed; retry".into(),
            )
        })?;
        // A pooled session may have been closed by the server while idle;
        // then one fresh session gets the message.
        for _ in 0..2 {
            let (mut session, reused) = match self.take_idle() {
                Some(session) => (session, true),
                None => (self.connect().await?, false),
            };
            match transaction(&self.inner.target, &mut session, message).await {
                Ok(response) => {
                    self.put_idle(session);
                    return Ok(self.delivered(&response, message));
                }
                Err(Failure {
                    classification,
                    usable,
                }) => {
                    // No reply at all, or 421 (the server closing an idle
                    // session), at the first command of a reused session.
                    let stale = reused
                        && classification.stage == Stage::MailFrom
                        && matches!(classification.reply_code, None | Some(421));
                    // An unusable session is dropped without QUIT: it may be
                    // broken, or inside DATA where QUIT would be message text.
                    if usable && !stale && self.reset(&mut session.conn).await {
                        self.put_idle(session);
                    }
                    if stale {
                        tracing::debug!(connection = %inner.target.connection, "pooled session was closed; reconnecting");
                        continue;
                    }
                    return Err(classification);
                }
            }
        }
        Err(Classification::local(
            Class::NetworkError,
            Stage::MailFrom,
            "the server closed two sessions in a row",
            hint(&inner.target, Class::NetworkError, Stage::MailFrom, 0, None),
        ))
    }

    /// Politely closes idle sessions (QUIT).
    pub async fn close(&self) {
        let idle: Vec<Idle> = match self.inner.idle.lock() {
            Ok(mut idle) => idle.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for mut i in idle {
            let _ = tokio::time::timeout(self.inner.target.command_timeout, i.session.conn.quit())
                .await;
        }
    }

    fn take_idle(&self) -> Option<Session> {
        let mut idle = self.inner.idle.lock().ok()?;
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < MAX_IDLE && !i.session.conn.has_broken() {
                return Some(i.session);
            }
        }
        None
    }

    fn put_idle(&self, session: Session) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            idle.push(Idle {
                session,
                since: Instant::now(),
            });
        }
    }

    async fn reset(&self, conn: &mut AsyncSmtpConnection) -> bool {
        matches!(
            tokio::time::timeout(self.inner.target.command_timeout, conn.command(Rset)).await,
            Ok(Ok(_))
        )
    }

    /// Opens a session: mailplug's stages up to the greeting / TLS, then
    /// lettre's EHLO and AUTH.
    async fn connect(&self) -> Result<Session, Classification> {
        let target = &self.inner.target;
        let mut rec = Recorder::new(self.inner.redactor.clone());
        let opened = open(target, &self.inner.tls, &mut rec).await?;
        let pipelining = opened.ehlo.has_extension("PIPELINING");
        let prefix = opened.banner.to_wire();
        let conn = opened
            .wire
            .into_conn()
            .map_err(|e| e.classify(target, Stage::Banner))?;
        let stream = Replay::new(prefix, conn);
        let client_id = ClientId::Domain(target.helo_name.clone());
        let mut conn = timed(
            target,
            Stage::Ehlo,
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &client_id),
        )
        .await?;
        if let Some((user, pass)) = target.credentials() {
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            if conn.server_info().get_auth_mechanism(&mechanisms).is_none() {
                quit_quickly(&mut conn).await;
                return Err(Classification::local(
                    Class::AuthUnavailable,
                    Stage::Auth,
                    "the server offers no AUTH PLAIN or LOGIN on this session",
                    hint(target, Class::AuthUnavailable, Stage::Auth, 0, None),
                ));
            }
            let credentials = Credentials::new(user.to_owned(), pass.expose().to_owned());
            if let Err(c) = timed(target, Stage::Auth, conn.auth(&mechanisms, &credentials)).await {
                quit_quickly(&mut conn).await;
                return Err(c);
            }
        }
        tracing::debug!(connection = %target.connection, pipelining, "SMTP session opened");
        Ok(Session { conn, pipelining })
    }

    fn delivered(&self, response: &Response, message: &OutgoingMessage) -> Delivery {
        let code = u16::from(response.code());
        let text = response.message().collect::<Vec<_>>().join(" ");
        let classification =
            Classification::from_reply(&self.inner.target, Stage::Data, code, &text);
        Delivery {
            queue_id: queue_id(&text),
            classification,
            message_id: message.message_id.clone(),
        }
    }
}

/// Ends a session politely but without waiting long for the goodbye.
async fn quit_quickly(conn: &mut AsyncSmtpConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.abort()).await;
}

/// Pulls a queue id out of a final DATA reply: Postfix/aiosmtpd "queued as
/// X", Exim/others "id=X".
pub(crate) fn queue_id(text: &str) -> Option<String> {
    let clean = |s: &str| {
        let s = s.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.');
        (!s.is_empty()).then(|| s.to_owned())
    };
    if let Some((_, rest)) = text.split_once("queued as ") {
        return rest.split_whitespace().next().and_then(clean);
    }
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("id=").and_then(clean))
}

#[cfg(test)]
mod tests {
    use super::queue_id;

    #[test]
    fn queue_ids_are_found_in_common_reply_formats() {
        assert_eq!(queue_id("Ok: queued as 4XyZ12").as_deref(), Some("4XyZ12"));
        assert_eq!(
            queue_id("2.0.0 OK id=1abc-DEF-2").as_deref(),
            Some("1abc-DEF-2")
        );
        assert_eq!(queue_id("OK"), None);
    }
}
