//! `mail::probe` stage by stage against the real server.

use std::time::Duration;

use mailplug::mail::{Class, ProbeOptions, Security, Stage, StageStatus, probe};

use super::harness::{closed_port, server, target};

fn rcpt(addr: &str) -> ProbeOptions {
    ProbeOptions {
        rcpt: Some(addr.to_owned()),
    }
}

#[tokio::test]
async fn starttls_probe_passes_every_stage_with_the_test_ca() {
    let s = server();
    let t = target("probe-starttls", s.submission, Security::Starttls);
    let r = probe(&t, rcpt("someone@example.test")).await;
    assert_eq!(r.classification.class, Class::Accepted, "{r:#?}");
    let stages: Vec<(Stage, StageStatus)> = r.stages.iter().map(|s| (s.stage, s.status)).collect();
    use StageStatus::Ok;
    assert_eq!(
        stages,
        [
            (Stage::Dns, Ok),
            (Stage::Connect, Ok),
            (Stage::Banner, Ok),
            (Stage::Ehlo, Ok),
            (Stage::Tls, Ok),
            (Stage::Ehlo, Ok),
            (Stage::Auth, Ok),
            (Stage::MailFrom, Ok),
            (Stage::RcptTo, Ok),
            (Stage::Quit, Ok),
        ]
    );
    assert!(
        r.stages[4].detail.as_deref().unwrap_or("").contains("TLS"),
        "{:?}",
        r.stages[4]
    );
}

#[tokio::test]
async fn implicit_tls_probe_handshakes_before_the_banner() {
    let s = server();
    let r = probe(
        &target("probe-tls", s.smtps, Security::Tls),
        ProbeOptions::default(),
    )
    .await;
    assert_eq!(r.classification.class, Class::Accepted, "{r:#?}");
    let order: Vec<Stage> = r.stages.iter().map(|s| s.stage).collect();
    assert_eq!(
        &order[..5],
        [
            Stage::Dns,
            Stage::Connect,
            Stage::Tls,
            Stage::Banner,
            Stage::Ehlo
        ]
    );
}

#[tokio::test]
async fn plaintext_auth_works_only_with_explicit_opt_in() {
    let s = server();
    let mut t = target("probe-plain", s.plain, Security::None);
    let refused = probe(&t, ProbeOptions::default()).await;
    assert_ne!(refused.classification.class, Class::Accepted);
    assert!(
        refused.stages.is_empty(),
        "nothing may be sent: {refused:#?}"
    );
    assert!(
        refused.classification.hint.contains("allow_insecure_auth"),
        "{refused:#?}"
    );
    t.allow_insecure_auth = true;
    let r = probe(&t, ProbeOptions::default()).await;
    assert_eq!(r.classification.class, Class::Accepted, "{r:#?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("in clear")),
        "{:?}",
        r.warnings
    );
}

#[tokio::test]
async fn wrong_password_is_auth_failed_with_535() {
    let s = server();
    let mut t = target("probe-badpw", s.submission, Security::Starttls);
    t.password = Some(mailplug::mail::Secret::new("wrong-password"));
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage, c.reply_code),
        (Class::AuthFailed, Stage::Auth, Some(535)),
        "{c:#?}"
    );
    assert_eq!(c.enhanced_status.as_deref(), Some("5.7.8"));
    assert!(!c.temporary);
}

#[tokio::test]
async fn disallowed_from_is_sender_not_allowed() {
    let s = server();
    let mut t = target("probe-from", s.submission, Security::Starttls);
    t.from_email = "ceo@elsewhere.test".to_owned();
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage, c.reply_code),
        (Class::SenderNotAllowed, Stage::MailFrom, Some(553)),
        "{c:#?}"
    );
    assert_eq!(c.enhanced_status.as_deref(), Some("5.7.1"));
    assert!(c.hint.contains("ceo@elsewhere.test"), "{}", c.hint);
}

#[tokio::test]
async fn tls_against_the_starttls_port_says_use_starttls() {
    let s = server();
    let c = probe(
        &target("probe-mm1", s.submission, Security::Tls),
        ProbeOptions::default(),
    )
    .await
    .classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::TlsMismatch, Stage::Tls),
        "{c:#?}"
    );
    assert_eq!(
        c.hint,
        "this port speaks plain SMTP; use security: starttls"
    );
    assert!(c.server_text.unwrap_or_default().contains("220"));
}

#[tokio::test]
async fn starttls_against_the_implicit_tls_port_says_use_tls() {
    let s = server();
    // With the default 5 s timeout the TLS check starts after the 2.5 s
    // grace period and answers before the greeting wait runs out.
    let t = target("probe-mm2", s.smtps, Security::Starttls);
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::TlsMismatch, Stage::Banner),
        "{c:#?}"
    );
    assert_eq!(
        c.hint,
        "this port expects TLS from the first byte; use security: tls"
    );
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let t = target("probe-closed", closed_port(), Security::Starttls);
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::ConnectionRefused, Stage::Connect),
        "{c:#?}"
    );
    assert!(c.temporary);
}

#[tokio::test]
async fn silent_server_is_a_timeout_at_the_banner() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold connections without a word (bounded: two accepts).
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..2 {
            if let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let mut t = target("probe-silent", port, Security::Starttls);
    t.command_timeout = Duration::from_millis(500);
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::Timeout, Stage::Banner),
        "{c:#?}"
    );
    assert!(c.temporary);
    holder.abort();
}

#[tokio::test]
async fn untrusted_certificate_without_ca_file_is_certificate_invalid() {
    let s = server();
    let mut t = target("probe-untrusted", s.submission, Security::Starttls);
    t.ca_file = None;
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::CertificateInvalid, Stage::Tls),
        "{c:#?}"
    );
    assert!(c.server_text.unwrap_or_default().contains("unknown CA"));
    let mut t = target("probe-untrusted-tls", s.smtps, Security::Tls);
    t.ca_file = None;
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(c.class, Class::CertificateInvalid, "{c:#?}");
}

#[tokio::test]
async fn wrong_host_name_is_certificate_invalid() {
    let s = server();
    let mut t = target("probe-name", s.smtps, Security::Tls);
    t.host = "127.0.0.1".to_owned(); // the same server, but not a name on its certificate
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(c.class, Class::CertificateInvalid, "{c:#?}");
    assert!(c.server_text.unwrap_or_default().contains("host name"));
}

#[tokio::test]
async fn verify_false_accepts_the_untrusted_certificate_with_a_warning() {
    let s = server();
    let mut t = target("probe-noverify", s.submission, Security::Starttls);
    t.ca_file = None;
    t.verify_tls = false;
    let r = probe(&t, ProbeOptions::default()).await;
    assert_eq!(r.classification.class, Class::Accepted, "{r:#?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("tls.verify: false")),
        "{:?}",
        r.warnings
    );
}

#[tokio::test]
async fn starttls_required_but_not_offered_is_starttls_unavailable() {
    let s = server();
    let c = probe(
        &target("probe-nostarttls", s.plain, Security::Starttls),
        ProbeOptions::default(),
    )
    .await
    .classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::StarttlsUnavailable, Stage::Tls),
        "{c:#?}"
    );
}

#[tokio::test]
async fn no_auth_offered_is_auth_unavailable() {
    let s = server();
    let mut t = target("probe-noauth", s.throttle, Security::None);
    t.allow_insecure_auth = true;
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::AuthUnavailable, Stage::Auth),
        "{c:#?}"
    );
}

#[tokio::test]
async fn rate_limited_mail_from_is_throttled_and_temporary() {
    let s = server();
    let mut t = target("probe-throttle", s.throttle, Security::None);
    t.username = None;
    t.password = None;
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage, c.reply_code),
        (Class::Throttled, Stage::MailFrom, Some(451)),
        "{c:#?}"
    );
    assert_eq!(c.enhanced_status.as_deref(), Some("4.7.1"));
    assert!(c.temporary);
}

#[tokio::test]
async fn unknown_recipient_is_rejected_with_5_1_1() {
    let s = server();
    let t = target("probe-rcpt", s.submission, Security::Starttls);
    let c = probe(&t, rcpt("unknown@example.test")).await.classification;
    assert_eq!(
        (c.class, c.stage, c.reply_code),
        (Class::RecipientRejected, Stage::RcptTo, Some(550)),
        "{c:#?}"
    );
    assert_eq!(c.enhanced_status.as_deref(), Some("5.1.1"));
    assert!(c.hint.contains("does not exist"));
}

#[tokio::test]
async fn busy_mailbox_is_deferred() {
    let s = server();
    let t = target("probe-busy", s.submission, Security::Starttls);
    let c = probe(&t, rcpt("busy@example.test")).await.classification;
    assert_eq!(
        (c.class, c.reply_code),
        (Class::Deferred, Some(450)),
        "{c:#?}"
    );
    assert!(c.temporary);
}

#[tokio::test]
async fn a_recipient_with_line_breaks_is_refused_before_any_traffic() {
    let s = server();
    let t = target("probe-inject", s.submission, Security::Starttls);
    let r = probe(&t, rcpt("a@example.test>\r\nDATA\r\n")).await;
    assert_eq!(r.classification.class, Class::ConfigError, "{r:#?}");
    assert!(r.stages.is_empty());
}

#[tokio::test]
async fn unresolvable_host_is_a_dns_failure() {
    // A label longer than 63 octets cannot be encoded in a DNS query, so
    // the resolver library fails locally: no packet leaves the machine
    // (checked with strace), unlike a lookup of a merely unknown name.
    let host = format!("{}.invalid", "a".repeat(64));
    let mut t = target("probe-dns", 25, Security::None);
    t.host = host;
    t.username = None;
    t.password = None;
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::DnsFailure, Stage::Dns),
        "{c:#?}"
    );
    assert!(c.hint.contains("does not resolve"), "{}", c.hint);
}

#[tokio::test]
async fn refusing_greeting_is_a_permanent_failure_at_the_banner() {
    let s = server();
    let c = probe(
        &target("probe-refuse", s.refuse, Security::Starttls),
        ProbeOptions::default(),
    )
    .await
    .classification;
    assert_eq!(
        (c.class, c.stage, c.reply_code),
        (Class::PermanentFailure, Stage::Banner, Some(554)),
        "{c:#?}"
    );
    assert_eq!(c.enhanced_status.as_deref(), Some("5.3.2"));
    assert!(!c.temporary);
}

#[tokio::test]
async fn missing_credentials_on_a_submission_port_is_auth_required() {
    let s = server();
    let mut t = target("probe-noauth-creds", s.submission, Security::Starttls);
    t.username = None;
    t.password = None;
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage, c.reply_code),
        (Class::AuthRequired, Stage::MailFrom, Some(530)),
        "{c:#?}"
    );
}

#[tokio::test]
async fn plaintext_injected_after_starttls_is_refused() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    // A scripted man-in-the-middle: it answers STARTTLS and appends a reply
    // in clear, hoping the client takes it as the first encrypted one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut io = BufReader::new(sock);
        let mut line = String::new();
        io.get_mut().write_all(b"220 fake ESMTP\r\n").await.unwrap();
        io.read_line(&mut line).await.unwrap();
        io.get_mut()
            .write_all(b"250-fake\r\n250 STARTTLS\r\n")
            .await
            .unwrap();
        line.clear();
        io.read_line(&mut line).await.unwrap();
        assert_eq!(line.trim_end(), "STARTTLS");
        io.get_mut()
            .write_all(b"220 go ahead\r\n250 injected\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let t = target("probe-injected", port, Security::Starttls);
    let c = probe(&t, ProbeOptions::default()).await.classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::ProtocolError, Stage::Tls),
        "{c:#?}"
    );
    fake.abort();
}

#[tokio::test]
async fn plaintext_mode_suggests_starttls_when_the_server_offers_it() {
    let s = server();
    let mut t = target("probe-plain-suggest", s.submission, Security::None);
    t.username = None;
    t.password = None;
    let r = probe(&t, ProbeOptions::default()).await;
    assert!(
        r.warnings.iter().any(|w| w.contains("offers STARTTLS")),
        "{r:#?}"
    );
}
