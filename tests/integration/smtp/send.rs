//! `mail::test_send` and the pooled `Mailer` against the real server; the
//! accepted messages are read back from the server's spool.

use mailplug::mail::{Class, Mailer, Security, Stage, new_message_id, test_send};

use super::harness::{ALLOWED_FROM, USER, server, spooled, spooled_for, target};

#[tokio::test]
async fn test_email_arrives_with_from_to_subject_over_starttls() {
    let s = server();
    let t = target("send-starttls", s.submission, Security::Starttls);
    let r = test_send(&t, "inbox-starttls@example.test").await.unwrap();
    let c = &r.classification;
    assert_eq!(
        (c.class, c.stage, c.reply_code),
        (Class::Accepted, Stage::Data, Some(250)),
        "{r:#?}"
    );
    let id = r.message_id.clone().unwrap();
    let m = spooled(&id);
    assert_eq!(
        m["queue_id"].as_str(),
        r.queue_id.as_deref(),
        "queue id from the reply"
    );
    assert_eq!(m["from"], format!("Mailplug Tests <{ALLOWED_FROM}>"));
    assert_eq!(m["to"], "inbox-starttls@example.test");
    assert_eq!(
        m["subject"],
        "mailplug test email for connection \"send-starttls\""
    );
    assert_eq!(m["mail_from"], ALLOWED_FROM);
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["inbox-starttls@example.test"])
    );
    assert_eq!(m["login"], USER);
    assert_eq!(m["tls"], true);
    assert_eq!(m["content_type"], "multipart/alternative");
    assert_eq!(m["parts"], serde_json::json!(["text/plain", "text/html"]));
    assert!(!m["date"].as_str().unwrap_or("").is_empty());
}

#[tokio::test]
async fn test_email_arrives_over_implicit_tls_and_plaintext() {
    let s = server();
    let r = test_send(
        &target("send-tls", s.smtps, Security::Tls),
        "inbox-tls@example.test",
    )
    .await
    .unwrap();
    assert_eq!(r.classification.class, Class::Accepted, "{r:#?}");
    let m = spooled(r.message_id.as_deref().unwrap());
    assert_eq!(
        m["subject"],
        "mailplug test email for connection \"send-tls\""
    );
    assert_eq!(m["tls"], true);

    let mut t = target("send-plain", s.plain, Security::None);
    t.username = None;
    t.password = None;
    let r = test_send(&t, "inbox-plain@example.test").await.unwrap();
    assert_eq!(r.classification.class, Class::Accepted, "{r:#?}");
    let m = spooled(r.message_id.as_deref().unwrap());
    assert_eq!(m["tls"], false);
    assert_eq!(m["login"], serde_json::Value::Null);
}

#[tokio::test]
async fn test_send_classifies_each_rejection_stage() {
    let s = server();
    let t = target("send-rejects", s.submission, Security::Starttls);

    let r = test_send(&t, "unknown@example.test").await.unwrap();
    let c = &r.classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::RecipientRejected, Stage::RcptTo),
        "{c:#?}"
    );
    assert_eq!(c.enhanced_status.as_deref(), Some("5.1.1"));

    let r = test_send(&t, "rejectdata@example.test").await.unwrap();
    let c = &r.classification;
    assert_eq!(
        (c.class, c.stage, c.reply_code),
        (Class::MessageRejected, Stage::Data, Some(554)),
        "{c:#?}"
    );

    let mut bad_from = t.clone();
    bad_from.from_email = "other@example.test".to_owned();
    let c = test_send(&bad_from, "x@example.test")
        .await
        .unwrap()
        .classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::SenderNotAllowed, Stage::MailFrom),
        "{c:#?}"
    );

    let mut bad_pw = t.clone();
    bad_pw.password = Some(mailplug::mail::Secret::new("nope"));
    let c = test_send(&bad_pw, "x@example.test")
        .await
        .unwrap()
        .classification;
    assert_eq!(
        (c.class, c.stage),
        (Class::AuthFailed, Stage::Auth),
        "{c:#?}"
    );

    let mut mismatch = t.clone();
    mismatch.security = Security::Tls;
    let c = test_send(&mismatch, "x@example.test")
        .await
        .unwrap()
        .classification;
    assert_eq!(c.class, Class::TlsMismatch, "{c:#?}");
    assert_eq!(
        c.hint,
        "this port speaks plain SMTP; use security: starttls"
    );

    let mut throttle = target("send-throttle", s.throttle, Security::None);
    throttle.username = None;
    throttle.password = None;
    let c = test_send(&throttle, "x@example.test")
        .await
        .unwrap()
        .classification;
    assert_eq!((c.class, c.temporary), (Class::Throttled, true), "{c:#?}");

    for rcpt in [
        "unknown@example.test",
        "rejectdata@example.test",
        "x@example.test",
    ] {
        assert!(
            spooled_for(rcpt)
                .iter()
                .all(|m| !m["subject"].as_str().unwrap_or("").contains("send-rejects")),
            "a rejected message was stored for {rcpt}"
        );
    }
}

#[tokio::test]
async fn pooled_mailer_reuses_sessions_and_delivers_every_message() {
    let s = server();
    let mut t = target("send-pool", s.submission, Security::Starttls);
    t.max_connections = 3;
    let mailer = Mailer::new(t.clone()).unwrap();
    let rcpt = "pool@example.test";
    let before = spooled_for(rcpt).len();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mailer = mailer.clone();
        let mut msg = mailplug::mail::test_message(&t, rcpt).unwrap();
        // Distinct Message-IDs so each arrival can be found.
        let id = new_message_id(&t.from_email);
        let raw = String::from_utf8(msg.raw.clone()).unwrap();
        msg.raw = raw.replace(&msg.message_id, &id).into_bytes();
        msg.message_id = id;
        tasks.push(tokio::spawn(async move { (i, mailer.send(&msg).await) }));
    }
    for task in tasks {
        let (i, result) = task.await.unwrap();
        let d = result.unwrap_or_else(|c| panic!("message {i}: {c:#?}"));
        assert_eq!(d.classification.class, Class::Accepted);
        spooled(&d.message_id);
    }
    assert_eq!(spooled_for(rcpt).len(), before + 12);
    // A failure in the middle leaves the session usable for the next message.
    let bad = mailplug::mail::test_message(&t, "unknown@example.test").unwrap();
    assert_eq!(
        mailer.send(&bad).await.unwrap_err().class,
        Class::RecipientRejected
    );
    let good = mailplug::mail::test_message(&t, rcpt).unwrap();
    assert_eq!(
        mailer.send(&good).await.unwrap().classification.class,
        Class::Accepted
    );
    mailer.close().await;
}

#[tokio::test]
async fn pooled_mailer_reconnects_when_the_server_dropped_an_idle_session() {
    let s = server();
    let mut t = target("send-brief", s.brief, Security::None);
    t.username = None;
    t.password = None;
    t.max_connections = 1;
    let mailer = Mailer::new(t.clone()).unwrap();
    let first = mailplug::mail::test_message(&t, "brief@example.test").unwrap();
    assert_eq!(
        mailer.send(&first).await.unwrap().classification.class,
        Class::Accepted
    );
    // The server closes sessions idle for 1 s; the pooled one is now dead.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let second = mailplug::mail::test_message(&t, "brief@example.test").unwrap();
    let d = mailer
        .send(&second)
        .await
        .unwrap_or_else(|c| panic!("{c:#?}"));
    assert_eq!(d.classification.class, Class::Accepted);
    spooled(&first.message_id);
    spooled(&second.message_id);
}

#[tokio::test]
async fn one_refused_recipient_fails_the_whole_pipelined_message() {
    let s = server();
    let t = target("send-partial", s.submission, Security::Starttls);
    let mailer = Mailer::new(t.clone()).unwrap();
    let mut msg = mailplug::mail::test_message(&t, "partial-ok@example.test").unwrap();
    msg.envelope = lettre::address::Envelope::new(
        Some(ALLOWED_FROM.parse().unwrap()),
        vec![
            "partial-ok@example.test".parse().unwrap(),
            "unknown@example.test".parse().unwrap(),
        ],
    )
    .unwrap();
    let c = mailer.send(&msg).await.unwrap_err();
    assert_eq!(
        (c.class, c.stage, c.reply_code),
        (Class::RecipientRejected, Stage::RcptTo, Some(550)),
        "{c:#?}"
    );
    // The server had opened DATA for the accepted recipient; nothing may
    // have been delivered, and the mailer keeps working.
    let next = mailplug::mail::test_message(&t, "partial-next@example.test").unwrap();
    assert_eq!(
        mailer.send(&next).await.unwrap().classification.class,
        Class::Accepted
    );
    spooled(&next.message_id);
    assert!(
        spooled_for("partial-ok@example.test").is_empty(),
        "a partial message was delivered"
    );
}
