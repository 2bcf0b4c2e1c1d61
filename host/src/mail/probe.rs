//! The staged connection check behind `mailplug check`: every stage of a
//! real session up to (optionally) RCPT, then RSET/QUIT — no message is sent.

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;

use super::classify::{Class, Classification, Stage};
use super::hint::hint;
use super::redact::Redactor;
use super::session::{Opened, Recorder, StageReport, open};
use super::target::{Security, SmtpTarget};
use super::tls::TlsSetup;
use super::wire::{Reply, Wire};

/// What the probe should do beyond connecting.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// Also try `RCPT TO` with this address (nothing is sent).
    pub rcpt: Option<String>,
}

/// The result of a probe: one entry per stage, then the classification.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// Connection name.
    pub connection: String,
    /// `host:port` probed.
    pub server: String,
    /// Security mode used.
    pub security: super::target::Security,
    /// Stages in the order they ran.
    pub stages: Vec<StageReport>,
    /// The overall outcome (`accepted` when every stage passed).
    pub classification: Classification,
    /// Configuration warnings (e.g. certificate verification disabled).
    pub warnings: Vec<String>,
}

/// Runs the staged probe against `target`. Never sends a message; never
/// panics on server input; the password appears only inside AUTH bytes,
/// and the report has been through the target's [`Redactor`] (the stages
/// by the recorder, the rest here, where the report is assembled).
pub async fn probe(target: &SmtpTarget, options: ProbeOptions) -> ProbeReport {
    let redactor = Redactor::for_target(target);
    let mut rec = Recorder::new(redactor.clone());
    let (warnings, classification) = match run(target, &options, &mut rec).await {
        Ok((w, c)) | Err((w, c)) => (w, c),
    };
    ProbeReport {
        connection: target.connection.clone(),
        server: target.address(),
        security: target.security,
        stages: rec.stages,
        classification: redactor.classification(classification),
        warnings: redactor.strings(warnings),
    }
}

type Outcome = Result<(Vec<String>, Classification), (Vec<String>, Classification)>;

async fn run(target: &SmtpTarget, options: &ProbeOptions, rec: &mut Recorder) -> Outcome {
    let config_error = |e: super::target::TargetError| {
        let detail = e.to_string();
        Classification::local(Class::ConfigError, Stage::Config, detail.clone(), detail)
    };
    let warnings = target
        .validate()
        .map_err(|e| (Vec::new(), config_error(e)))?;
    // The recipient goes into RCPT TO as is: only a plain address will do.
    if let Some(rcpt) = &options.rcpt
        && crate::address::parse(rcpt).is_err()
    {
        let detail = format!("--rcpt {rcpt:?} is not a valid email address");
        let c = Classification::local(Class::ConfigError, Stage::Config, detail.clone(), detail);
        return Err((warnings, c));
    }
    let mut warnings = warnings;
    let tls = TlsSetup::new(target).map_err(|e| (warnings.clone(), config_error(e)))?;
    let opened = open(target, &tls, rec).await;
    let Opened { mut wire, ehlo, .. } = opened.map_err(|c| (warnings.clone(), c))?;
    if target.security == Security::None && ehlo.has_extension("STARTTLS") {
        warnings.push(format!(
            "connection {}: the server offers STARTTLS on this port; \
             security: starttls would encrypt the session",
            target.connection
        ));
    }
    let fail = |c: Classification| (warnings.clone(), c);
    let timeout = target.command_timeout;

    match target.credentials() {
        Some((user, pass)) => {
            let t = Instant::now();
            let r = auth(target, &mut wire, &ehlo, user, pass.expose()).await;
            rec.finish(Stage::Auth, t, r, |m| Some(format!("{m} accepted")))
                .map_err(fail)?;
        }
        None => rec.skip(Stage::Auth, "no credentials configured"),
    }

    let t = Instant::now();
    let r = step(
        target,
        &mut wire,
        Stage::MailFrom,
        &format!("MAIL FROM:<{}>", target.from_email),
    )
    .await;
    rec.finish(Stage::MailFrom, t, r, summary).map_err(fail)?;

    let mut last = Stage::MailFrom;
    if let Some(rcpt) = &options.rcpt {
        let t = Instant::now();
        let r = step(
            target,
            &mut wire,
            Stage::RcptTo,
            &format!("RCPT TO:<{rcpt}>"),
        )
        .await;
        rec.finish(Stage::RcptTo, t, r, summary).map_err(fail)?;
        last = Stage::RcptTo;
    } else {
        rec.skip(Stage::RcptTo, "no --rcpt given");
    }

    let t = Instant::now();
    let r = wire.command("RSET", timeout).await;
    let ok = matches!(&r, Ok(r) if r.is_positive());
    wire.quit(timeout).await;
    rec.record(
        Stage::Quit,
        t,
        ok,
        r.ok().map(|r| format!("{} {}", r.code, r.text())),
    );

    let mut done = Classification::local(
        Class::Accepted,
        last,
        "every stage passed; no message was sent",
        hint(target, Class::Accepted, last, 250, None),
    );
    done.temporary = false;
    Ok((warnings, done))
}

fn summary(r: &Reply) -> Option<String> {
    Some(format!("{} {}", r.code, r.text()))
}

/// Sends one command; a negative reply is classified at `stage`.
async fn step(
    target: &SmtpTarget,
    wire: &mut Wire,
    stage: Stage,
    line: &str,
) -> Result<Reply, Classification> {
    let r = wire
        .command(line, target.command_timeout)
        .await
        .map_err(|e| e.classify(target, stage))?;
    if r.is_positive() {
        Ok(r)
    } else {
        Err(Classification::from_reply(target, stage, r.code, &r.text()))
    }
}

/// AUTH PLAIN (preferred) or LOGIN; returns the mechanism used.
async fn auth(
    target: &SmtpTarget,
    wire: &mut Wire,
    ehlo: &Reply,
    user: &str,
    pass: &str,
) -> Result<&'static str, Classification> {
    let timeout = target.command_timeout;
    let offered = ehlo.auth_mechanisms();
    let negative = |r: &Reply| Classification::from_reply(target, Stage::Auth, r.code, &r.text());
    let io = |e: super::wire::WireError| e.classify(target, Stage::Auth);
    if offered.iter().any(|m| m == "PLAIN") {
        let token = B64.encode(format!("\0{user}\0{pass}"));
        let r = wire
            .secret_command(
                &format!("AUTH PLAIN {token}"),
                "AUTH PLAIN <redacted>",
                timeout,
            )
            .await
            .map_err(io)?;
        return if r.is_positive() {
            Ok("PLAIN")
        } else {
            Err(negative(&r))
        };
    }
    if offered.iter().any(|m| m == "LOGIN") {
        let r = wire.command("AUTH LOGIN", timeout).await.map_err(io)?;
        if r.code != 334 {
            return Err(negative(&r));
        }
        let r = wire
            .secret_command(&B64.encode(user), "<redacted username>", timeout)
            .await
            .map_err(io)?;
        if r.code != 334 {
            return Err(negative(&r));
        }
        let r = wire
            .secret_command(&B64.encode(pass), "<redacted password>", timeout)
            .await
            .map_err(io)?;
        return if r.is_positive() {
            Ok("LOGIN")
        } else {
            Err(negative(&r))
        };
    }
    let detail = if offered.is_empty() {
        "the server offers no AUTH mechanism on this session".to_owned()
    } else {
        format!(
            "offered mechanisms: {} (mailplug supports PLAIN, LOGIN)",
            offered.join(" ")
        )
    };
    Err(Classification::local(
        Class::AuthUnavailable,
        Stage::Auth,
        detail,
        hint(target, Class::AuthUnavailable, Stage::Auth, 0, None),
    ))
}
