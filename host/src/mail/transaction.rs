//! One mail transaction on an open lettre session: MAIL FROM, RCPT TO for
//! each recipient, DATA and the body, each reply classified at its stage.
//!
//! When the server offers PIPELINING (RFC 2920) the three commands go out
//! in one write and the replies are read in order, saving two round trips
//! per message; the body and its terminating dot always go out as a single
//! write.

use std::fmt;

use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use super::classify::{Class, Classification, Stage};
use super::hint::hint;
use super::message::OutgoingMessage;
use super::target::SmtpTarget;

/// A lettre session plus what mailplug learned from its own EHLO (lettre
/// does not track PIPELINING).
pub(crate) struct Session {
    pub(crate) conn: AsyncSmtpConnection,
    pub(crate) pipelining: bool,
}

/// A failed transaction: the classification, and whether the session can
/// still be used (the server answered; only RSET is needed).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) classification: Classification,
    pub(crate) usable: bool,
}

impl From<Classification> for Failure {
    fn from(classification: Classification) -> Self {
        Failure {
            usable: classification.reply_code.is_some(),
            classification,
        }
    }
}

/// Runs one lettre step under the command timeout and classifies its
/// failure at `stage`.
pub(crate) async fn timed<T>(
    target: &SmtpTarget,
    stage: Stage,
    fut: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, Classification> {
    match tokio::time::timeout(target.command_timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify_lettre(target, stage, &e)),
        Err(_) => Err(Classification::local(
            Class::Timeout,
            stage,
            format!("no reply within {:?}", target.command_timeout),
            hint(target, Class::Timeout, stage, 0, None),
        )),
    }
}

/// Classifies a lettre error at `stage`.
fn classify_lettre(
    target: &SmtpTarget,
    stage: Stage,
    err: &lettre::transport::smtp::Error,
) -> Classification {
    let text = std::error::Error::source(err)
        .map(ToString::to_string)
        .unwrap_or_default();
    if let Some(code) = err.status() {
        return Classification::from_reply(target, stage, u16::from(code), &text);
    }
    let class = if err.is_timeout() {
        Class::Timeout
    } else if err.is_tls() {
        Class::TlsFailed
    } else if err.is_client() && stage == Stage::Auth {
        Class::AuthUnavailable
    } else if err.is_response() {
        Class::ProtocolError
    } else {
        Class::NetworkError
    };
    Classification::local(
        class,
        stage,
        err.to_string(),
        hint(target, class, stage, 0, None),
    )
}

/// Preformatted protocol text handed to lettre's `command` (which writes
/// it in one go and reads one reply).
struct Raw<'a>(&'a str);

impl fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The message with dot-stuffing and the end-of-data line, as one string;
/// `None` for bodies that are not UTF-8 (lettre's own writer handles those).
fn data_block(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    out.push_str("\r\n.\r\n");
    Some(out)
}

/// Runs the transaction for `message` on `conn`.
pub(crate) async fn transaction(
    target: &SmtpTarget,
    session: &mut Session,
    message: &OutgoingMessage,
) -> Result<Response, Failure> {
    let conn = &mut session.conn;
    let mut params = Vec::new();
    if !message.raw.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mail = Mail::new(message.envelope.from().cloned(), params);
    let rcpts: Vec<Rcpt> = message
        .envelope
        .to()
        .iter()
        .map(|to| Rcpt::new(to.clone(), Vec::new()))
        .collect();
    if session.pipelining {
        pipelined(target, conn, &mail, &rcpts).await?;
    } else {
        timed(target, Stage::MailFrom, conn.command(mail)).await?;
        for rcpt in rcpts {
            timed(target, Stage::RcptTo, conn.command(rcpt)).await?;
        }
        timed(target, Stage::Data, conn.command(Data)).await?;
    }
    let sent = match data_block(&message.raw) {
        Some(block) => timed(target, Stage::Data, conn.command(Raw(&block))).await,
        None => timed(target, Stage::Data, conn.message(&message.raw)).await,
    };
    // After a failed body transfer the session state is unknown unless the
    // server answered.
    Ok(sent?)
}

/// MAIL, every RCPT and DATA in one write, then every reply in order. The
/// first negative reply decides the class (a rejected MAIL makes the later
/// replies 503s that say nothing new).
async fn pipelined(
    target: &SmtpTarget,
    conn: &mut AsyncSmtpConnection,
    mail: &Mail,
    rcpts: &[Rcpt],
) -> Result<(), Failure> {
    let mut block = mail.to_string();
    for rcpt in rcpts {
        block.push_str(&rcpt.to_string());
    }
    block.push_str(&Data.to_string());

    let mut first_failure: Option<Classification> = None;
    let mut note = |r: Result<Response, Classification>| -> Result<(), Failure> {
        match r {
            Ok(_) => Ok(()),
            // No reply at all: the session is gone, stop reading. An earlier
            // refusal (e.g. 421 before the server hung up) explains more.
            Err(c) if c.reply_code.is_none() => Err(Failure {
                classification: first_failure.take().unwrap_or(c),
                usable: false,
            }),
            Err(c) => {
                first_failure.get_or_insert(c);
                Ok(())
            }
        }
    };
    note(timed(target, Stage::MailFrom, conn.command(Raw(&block))).await)?;
    for _ in rcpts {
        note(timed(target, Stage::RcptTo, conn.read_response()).await)?;
    }
    let data = timed(target, Stage::Data, conn.read_response()).await;
    let data_open = data.is_ok();
    note(data)?;
    match first_failure {
        None => Ok(()),
        Some(classification) => Err(Failure {
            // The server is waiting for a message we will not send (some
            // recipient was refused): only closing the session aborts it.
            usable: !data_open,
            classification,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::data_block;

    #[test]
    fn data_block_dot_stuffs_and_terminates() {
        let block = data_block(b".first\r\nmid.dle\r\n.\r\n..x").unwrap();
        assert_eq!(block, "..first\r\nmid.dle\r\n..\r\n...x\r\n.\r\n");
        assert_eq!(data_block(&[0xff, 0xfe]), None);
    }
}
