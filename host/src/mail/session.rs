//! Opening an SMTP session stage by stage (DNS → TCP → [TLS] → banner →
//! EHLO → [STARTTLS → TLS → EHLO]), timing each stage, shared by the probe
//! and the pooled transport.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::classify::{Class, Classification, Stage};
use super::hint::hint;
use super::net::{Conn, connect, handshake, resolve};
use super::redact::Redactor;
use super::target::{Security, SmtpTarget};
use super::tls::TlsSetup;
use super::wire::{Reply, Wire, WireError};

/// Outcome of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// The stage succeeded.
    Ok,
    /// The stage failed; the report's classification says why.
    Failed,
    /// Not applicable (e.g. AUTH without credentials).
    Skipped,
}

/// One line of a probe report.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Which stage.
    pub stage: Stage,
    /// How it went.
    pub status: StageStatus,
    /// Wall time of the stage, in milliseconds.
    pub duration_ms: f64,
    /// What the stage saw (reply summary, TLS version, addresses).
    pub detail: Option<String>,
}

/// Collects stage reports (kept by the probe, dropped by the sending path)
/// and hands its redactor to the session's [`Wire`]. Every stage detail
/// passes through the redactor here, where stage reports are made.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) stages: Vec<StageReport>,
    redactor: Redactor,
}

impl Recorder {
    pub(crate) fn new(redactor: Redactor) -> Self {
        Recorder {
            stages: Vec::new(),
            redactor,
        }
    }

    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub(crate) fn record(
        &mut self,
        stage: Stage,
        started: Instant,
        ok: bool,
        detail: Option<String>,
    ) {
        self.stages.push(StageReport {
            stage,
            status: if ok {
                StageStatus::Ok
            } else {
                StageStatus::Failed
            },
            duration_ms: (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
            detail: detail.map(|d| self.redactor.string(d)),
        });
    }

    pub(crate) fn skip(&mut self, stage: Stage, detail: &str) {
        self.stages.push(StageReport {
            stage,
            status: StageStatus::Skipped,
            duration_ms: 0.0,
            detail: Some(self.redactor.redact(detail).into_owned()),
        });
    }

    /// Times `result`'s stage: records it and passes the result through.
    pub(crate) fn finish<T>(
        &mut self,
        stage: Stage,
        started: Instant,
        result: Result<T, Classification>,
        detail: impl FnOnce(&T) -> Option<String>,
    ) -> Result<T, Classification> {
        match &result {
            Ok(v) => {
                let d = detail(v);
                self.record(stage, started, true, d);
            }
            Err(c) => self.record(stage, started, false, c.server_text.clone()),
        }
        result
    }
}

/// An open session after EHLO (after TLS when STARTTLS was used), ready for
/// AUTH. The sending path hands the stream to lettre, replaying the
/// greeting; lettre then sends its own EHLO, which RFC 5321 allows.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) wire: Wire,
    pub(crate) banner: Reply,
    /// The last EHLO reply (after TLS when STARTTLS was used).
    pub(crate) ehlo: Reply,
}

fn reply_error(target: &SmtpTarget, stage: Stage, reply: &Reply) -> Classification {
    Classification::from_reply(target, stage, reply.code, &reply.text())
}

fn tls_detail(conn: &Conn) -> Option<String> {
    match conn {
        Conn::Tls(s) => {
            let c = s.get_ref().1;
            Some(format!(
                "{} {}",
                c.protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                c.negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default()
            ))
        }
        Conn::Plain(_) => None,
    }
}

/// Opens a session up to "ready for AUTH", recording each stage.
pub(crate) async fn open(
    target: &SmtpTarget,
    tls: &TlsSetup,
    rec: &mut Recorder,
) -> Result<Opened, Classification> {
    let t = Instant::now();
    let addrs = resolve(target).await;
    let addrs = rec.finish(Stage::Dns, t, addrs, |a| {
        Some(
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;

    let t = Instant::now();
    let tcp = connect(target, &addrs).await;
    let tcp = rec.finish(Stage::Connect, t, tcp, |s| {
        s.peer_addr().ok().map(|a| a.to_string())
    })?;

    let conn = if target.security == Security::Tls {
        let t = Instant::now();
        let conn = handshake(target, tls, tcp, target.command_timeout).await;
        rec.finish(Stage::Tls, t, conn, tls_detail)?
    } else {
        Conn::Plain(tcp)
    };
    let mut wire = Wire::new(conn, target, rec.redactor().clone());

    let t = Instant::now();
    let banner = read_banner(target, tls, &addrs, &mut wire).await;
    let banner = rec.finish(Stage::Banner, t, banner, |r| {
        Some(format!("{} {}", r.code, r.text()))
    })?;

    let t = Instant::now();
    let ehlo = ehlo(target, &mut wire).await;
    let ehlo = rec.finish(Stage::Ehlo, t, ehlo, |r| Some(r.extensions().join(", ")))?;
    if target.security != Security::Starttls {
        return Ok(Opened { wire, banner, ehlo });
    }

    let t = Instant::now();
    let upgraded = starttls(target, tls, wire, &ehlo).await;
    let mut wire = rec.finish(Stage::Tls, t, upgraded, |w| tls_detail(w.conn()))?;
    let t = Instant::now();
    let ehlo = self::ehlo(target, &mut wire).await;
    let ehlo = rec.finish(Stage::Ehlo, t, ehlo, |r| {
        Some(format!("after TLS: {}", r.extensions().join(", ")))
    })?;
    Ok(Opened { wire, banner, ehlo })
}

async fn read_banner(
    target: &SmtpTarget,
    tls: &TlsSetup,
    addrs: &[std::net::SocketAddr],
    wire: &mut Wire,
) -> Result<Reply, Classification> {
    let mismatch = |waited: Duration| {
        Classification::local(
            Class::TlsMismatch,
            Stage::Banner,
            format!("no greeting after {waited:?}, but the port completes a TLS handshake"),
            hint(target, Class::TlsMismatch, Stage::Banner, 0, None),
        )
    };
    // Servers greet at once; silence usually means the port waits for a
    // TLS ClientHello. After a short grace period a second connection asks
    // the port whether it speaks TLS, while this one keeps waiting for a
    // (slow) greeting until the command timeout.
    let grace = (target.command_timeout / 2).min(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let read = wire.read_reply(target.command_timeout);
    tokio::pin!(read);
    let early = tokio::select! {
        r = &mut read => Some(r),
        () = tokio::time::sleep(grace), if target.security != Security::Tls => None,
    };
    let result = match early {
        Some(r) => r,
        None => {
            let sniff = speaks_tls(target, tls, addrs);
            tokio::pin!(sniff);
            tokio::select! {
                r = &mut read => match r {
                    Err(WireError::Timeout(d)) if sniff.await => return Err(mismatch(d)),
                    other => other,
                },
                is_tls = &mut sniff => {
                    if is_tls {
                        return Err(mismatch(started.elapsed()));
                    }
                    read.await
                }
            }
        }
    };
    match result {
        Ok(r) if r.code == 220 => Ok(r),
        Ok(r) => Err(reply_error(target, Stage::Banner, &r)),
        Err(e) => Err(e.classify(target, Stage::Banner)),
    }
}

/// Whether the port answers a TLS ClientHello with TLS: a completed
/// handshake, a certificate complaint or a TLS alert all prove it.
async fn speaks_tls(target: &SmtpTarget, tls: &TlsSetup, addrs: &[std::net::SocketAddr]) -> bool {
    let Ok(tcp) = connect(target, addrs).await else {
        return false;
    };
    let limit = target.command_timeout.min(Duration::from_secs(10));
    match handshake(target, tls, tcp, limit).await {
        Ok(_) => true,
        Err(c) => {
            c.class == Class::CertificateInvalid
                || (c.class == Class::TlsFailed
                    && c.server_text
                        .is_some_and(|t| t.contains("received fatal alert")))
        }
    }
}

async fn ehlo(target: &SmtpTarget, wire: &mut Wire) -> Result<Reply, Classification> {
    let timeout = target.command_timeout;
    let r = wire
        .command(&format!("EHLO {}", target.helo_name), timeout)
        .await
        .map_err(|e| e.classify(target, Stage::Ehlo))?;
    if r.is_positive() {
        return Ok(r);
    }
    if matches!(r.code, 500 | 502) {
        // A pre-ESMTP server: HELO works but offers no extensions.
        let helo = wire
            .command(&format!("HELO {}", target.helo_name), timeout)
            .await
            .map_err(|e| e.classify(target, Stage::Ehlo))?;
        if helo.is_positive() {
            return Ok(helo);
        }
        return Err(reply_error(target, Stage::Ehlo, &helo));
    }
    Err(reply_error(target, Stage::Ehlo, &r))
}

async fn starttls(
    target: &SmtpTarget,
    tls: &TlsSetup,
    mut wire: Wire,
    ehlo: &Reply,
) -> Result<Wire, Classification> {
    if !ehlo.has_extension("STARTTLS") {
        wire.quit(target.command_timeout).await;
        return Err(Classification::local(
            Class::StarttlsUnavailable,
            Stage::Tls,
            format!(
                "EHLO did not offer STARTTLS (offered: {})",
                ehlo.extensions().join(", ")
            ),
            hint(target, Class::StarttlsUnavailable, Stage::Tls, 0, None),
        ));
    }
    let r = wire
        .command("STARTTLS", target.command_timeout)
        .await
        .map_err(|e| e.classify(target, Stage::Tls))?;
    if r.code != 220 {
        return Err(reply_error(target, Stage::Tls, &r));
    }
    let redactor = wire.redactor().clone();
    let conn = wire
        .into_conn()
        .map_err(|e| e.classify(target, Stage::Tls))?;
    let Conn::Plain(tcp) = conn else {
        return Err(Classification::local(
            Class::ProtocolError,
            Stage::Tls,
            "STARTTLS on an already encrypted stream",
            hint(target, Class::ProtocolError, Stage::Tls, 0, None),
        ));
    };
    let conn = handshake(target, tls, tcp, target.command_timeout).await?;
    Ok(Wire::new(conn, target, redactor))
}
