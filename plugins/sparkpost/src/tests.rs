use super::*;

fn span<'b>(body: &'b [u8], t: &Text) -> Option<&'b str> {
    match t {
        Text::Span((offset, len)) => {
            std::str::from_utf8(&body[*offset as usize..(*offset + *len) as usize]).ok()
        }
        Text::Owned(_) => None,
    }
}

fn value<'b>(body: &'b [u8], t: &'b Option<Text>) -> Option<&'b str> {
    match t {
        Some(Text::Owned(s)) => Some(s),
        Some(t @ Text::Span(_)) => span(body, t),
        None => None,
    }
}

#[test]
fn bounce_classes_follow_sparkposts_categories() {
    let hard = Mapping::Event(EventKind::Bounced, Some(BounceClass::Hard));
    let soft = Mapping::Event(EventKind::Bounced, Some(BounceClass::Soft));
    let none = Mapping::Event(EventKind::Bounced, None);
    let dropped = Mapping::Event(EventKind::Dropped, None);
    for (code, expected) in [
        ("10", hard),
        ("30", hard),
        ("90", hard),
        ("20", soft),
        ("21", soft),
        ("22", soft),
        ("23", soft),
        ("24", soft),
        ("40", soft),
        ("60", soft),
        ("70", soft),
        ("100", soft),
        ("50", soft),
        ("51", soft),
        ("52", soft),
        ("53", soft),
        ("54", soft),
        ("25", dropped),
        ("26", dropped),
        ("80", dropped),
        ("1", none),
        ("99", none),
        ("abc", none),
        ("", none),
    ] {
        assert_eq!(bounce(Some(code)), expected, "{code}");
        assert_eq!(map("out_of_band", Some(code), None), expected, "{code}");
    }
    assert_eq!(bounce(None), none);
}

#[test]
fn types_map_to_unified_kinds_or_are_skipped() {
    let k = |kind| Mapping::Event(kind, None);
    for (name, expected) in [
        ("delivery", k(EventKind::Delivered)),
        ("delay", k(EventKind::Deferred)),
        ("policy_rejection", k(EventKind::Dropped)),
        ("generation_rejection", k(EventKind::Dropped)),
        ("spam_complaint", k(EventKind::Complained)),
        ("open", k(EventKind::Opened)),
        ("initial_open", k(EventKind::Opened)),
        ("amp_open", k(EventKind::Opened)),
        ("amp_initial_open", k(EventKind::Opened)),
        ("click", k(EventKind::Clicked)),
        ("amp_click", k(EventKind::Clicked)),
        ("list_unsubscribe", k(EventKind::Unsubscribed)),
        ("link_unsubscribe", k(EventKind::Unsubscribed)),
        ("injection", Mapping::Skip),
        ("generation_failure", Mapping::Skip),
        ("sms_status", Mapping::Skip),
        ("Delivery", Mapping::Skip),
    ] {
        assert_eq!(map(name, None, None), expected, "{name}");
    }
    assert_eq!(
        map("spam_complaint", None, Some("abuse")),
        k(EventKind::Complained)
    );
    assert_eq!(map("spam_complaint", None, Some("not-spam")), Mapping::Skip);
}

#[test]
fn timestamps_are_unix_seconds_strings_numbers_or_rfc3339() {
    let t = |s: &str| occurred_at(&RawTime::Text(Cow::Borrowed(s)));
    assert_eq!(t("1767268700"), Ok(1_767_268_700));
    assert_eq!(t("1767268700.999"), Ok(1_767_268_700));
    assert_eq!(t("2026-01-01T12:58:20+01:00"), Ok(1_767_268_700));
    assert_eq!(occurred_at(&RawTime::Int(1_767_268_700)), Ok(1_767_268_700));
    assert_eq!(
        occurred_at(&RawTime::Float(1_767_268_700.5)),
        Ok(1_767_268_700)
    );
    for bad in [
        "",
        "abc",
        "-1",
        "1767268700.",
        "1e9",
        " 1767268700",
        "99999999999999",
    ] {
        assert!(matches!(t(bad), Err(ParseError::Invalid(_))), "{bad:?}");
    }
    assert!(occurred_at(&RawTime::Int(-1)).is_err());
}

#[test]
fn the_ping_and_an_empty_batch_give_no_events() {
    let parsed = parse(br#"[{"msys":{}}]"#).unwrap();
    assert!(parsed.events.is_empty() && parsed.skipped.is_empty());
    assert!(parse(b" [ ] ").unwrap().events.is_empty());
}

#[test]
fn a_bounce_keeps_ids_and_text_as_spans_with_explicit_codes() {
    let body = br#"[{"msys":{"message_event":{"type":"bounce","bounce_class":"10","error_code":"550","event_id":"92356927693813856","message_id":"000443ee14578172be22","transmission_id":"7398362398475647","rcpt_to":"no-such-user@example.com","raw_reason":"550 5.1.1 <No-Such-User@Example.com>: unknown","reason":"550 5.1.1 ...@...: unknown","timestamp":"1767268700"}}}]"#;
    let events = parse(body).unwrap().events;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.kind, e.bounce_class),
        (EventKind::Bounced, Some(BounceClass::Hard))
    );
    assert_eq!(span(body, &e.recipient), Some("no-such-user@example.com"));
    assert_eq!(e.occurred_at, 1_767_268_700);
    let span_of = |t: &Option<Text>| t.as_ref().and_then(|t| span(body, t));
    assert_eq!(span_of(&e.provider_event_id), Some("92356927693813856"));
    assert_eq!(span_of(&e.provider_message_id), Some("7398362398475647"));
    assert_eq!(
        span_of(&e.diagnostic),
        Some("550 5.1.1 <No-Such-User@Example.com>: unknown")
    );
    assert_eq!(value(body, &e.smtp_status), Some("550"));
    assert_eq!(value(body, &e.enhanced_status), Some("5.1.1"));
}

#[test]
fn fallbacks_message_id_reason_and_codes_from_text() {
    let body = br#"[{"msys":{"message_event":{"type":"delay","message_id":"m-1","rcpt_to":"a@example.com","reason":"451 4.7.1 ...@... greylisted","timestamp":"1767268700"}}}]"#;
    let e = &parse(body).unwrap().events[0];
    assert_eq!(e.kind, EventKind::Deferred);
    assert_eq!(value(body, &e.provider_message_id), Some("m-1"));
    assert_eq!(
        value(body, &e.diagnostic),
        Some("451 4.7.1 ...@... greylisted")
    );
    assert_eq!(value(body, &e.smtp_status), Some("451"));
    assert_eq!(value(body, &e.enhanced_status), Some("4.7.1"));
    // An explicit code that differs from the text's keeps the text's
    // enhanced status out (they are not one reply).
    let body = br#"[{"msys":{"message_event":{"type":"policy_rejection","error_code":"554","rcpt_to":"a@example.com","raw_reason":"550 5.7.1 blocked","timestamp":"1767268700"}}}]"#;
    let e = &parse(body).unwrap().events[0];
    assert_eq!(e.kind, EventKind::Dropped);
    assert_eq!(value(body, &e.smtp_status), Some("554"));
    assert_eq!(e.enhanced_status, None);
}

#[test]
fn engagement_events_carry_no_diagnostic_or_codes() {
    let body = br#"[{"msys":{"track_event":{"type":"click","rcpt_to":"a@example.com","timestamp":"1767268700","error_code":"550","raw_reason":"x"}}}]"#;
    let e = &parse(body).unwrap().events[0];
    assert_eq!(e.kind, EventKind::Clicked);
    assert!(e.smtp_status.is_none() && e.enhanced_status.is_none() && e.diagnostic.is_none());
}

#[test]
fn skipped_types_are_counted_per_class() {
    let body = br#"[{"msys":{"message_event":{"type":"injection","rcpt_to":"a@example.com","timestamp":"1"}}},{"msys":{"message_event":{"type":"injection"}}},{"msys":{"relay_event":{"type":"relay_delivery","whatever":[1]}}},{"msys":{"future_event":[1,2]}},{"msys":{"message_event":{"type":"spam_complaint","fbtype":"not-spam","rcpt_to":"a@example.com","timestamp":"1"}}}]"#;
    let parsed = parse(body).unwrap();
    assert!(parsed.events.is_empty());
    let skipped: Vec<(String, String, usize)> = parsed
        .skipped
        .iter()
        .map(|((c, k), n)| (c.to_string(), k.to_string(), *n))
        .collect();
    assert_eq!(
        skipped,
        [
            ("future_event".into(), "?".into(), 1),
            ("message_event".into(), "injection".into(), 2),
            ("message_event".into(), "spam_complaint".into(), 1),
            ("relay_event".into(), "relay_delivery".into(), 1),
        ]
    );
}

#[test]
fn escaped_strings_are_owned_and_decoded() {
    let body = br#"[{"msys":{"track_event":{"type":"open","rcpt_to":"j\u00e9r\u00f4me@example.com","timestamp":"1767268700","event_id":"1"}}}]"#;
    let e = &parse(body).unwrap().events[0];
    assert_eq!(e.recipient, Text::Owned("jérôme@example.com".into()));
}

#[test]
fn errors_name_the_event_and_field() {
    let ok =
        r#"{"msys":{"track_event":{"type":"open","rcpt_to":"a@example.com","timestamp":"1"}}}"#;
    let body = format!(r#"[{ok},{{"msys":{{"track_event":{{"type":"open","timestamp":"1"}}}}}}]"#);
    assert_eq!(
        parse(body.as_bytes()).unwrap_err(),
        invalid("event 1 (track_event): missing `rcpt_to`")
    );
    let body = r#"[{"msys":{"message_event":{"rcpt_to":"a@example.com","timestamp":"1"}}}]"#;
    assert_eq!(
        parse(body.as_bytes()).unwrap_err(),
        invalid("event 0 (message_event): missing `type`")
    );
    let body = r#"[{"msys":{"message_event":{"type":"delivery","rcpt_to":"a@example.com"}}}]"#;
    assert_eq!(
        parse(body.as_bytes()).unwrap_err(),
        invalid("event 0 (message_event): missing `timestamp`")
    );
    assert_eq!(
        parse(br#"[{"other":1}]"#).unwrap_err(),
        invalid("event 0: missing `msys`")
    );
    for malformed in [
        &br#"{"msys":{}}"#[..],
        br#"[["msys"]]"#,
        br#"[{"msys":[]}]"#,
        br#"[{"msys":{"message_event":["bounce"]}}]"#,
        br#"[{"msys":{"message_event":{"type":"delivery","type":"bounce"}}}]"#,
        br#"[{"msys":{"message_event":{"type":"delivery","timestamp":true}}}]"#,
        br#"[{"msys":{}}"#,
        b"",
    ] {
        assert!(
            matches!(parse(malformed), Err(ParseError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(malformed)
        );
    }
}

#[test]
fn large_batches_parse_in_one_pass() {
    let one = r#"{"msys":{"message_event":{"type":"delivery","rcpt_to":"a@example.com","timestamp":"1767268700","event_id":"92356927693813856","transmission_id":"7398362398475647","rcpt_meta":{"tenant":"acme","nested":{"a":[1,2,3]}},"rcpt_tags":["x"],"raw_reason":"250 2.0.0 OK"}}}"#;
    let body = format!("[{}]", vec![one; 5000].join(","));
    let events = parse(body.as_bytes()).unwrap().events;
    assert_eq!(events.len(), 5000);
    assert!(events.iter().all(|e| matches!(e.recipient, Text::Span(_))));
    let too_many = format!(
        "[{}]",
        vec![r#"{"msys":{}}"#; limits::MAX_EVENTS + 1].join(",")
    );
    assert!(
        matches!(parse(too_many.as_bytes()), Err(ParseError::Invalid(m)) if m.contains("limit"))
    );
}

#[test]
fn the_shared_sample_parses_as_its_expected_events() {
    let body = include_bytes!("../../../tests/fixtures/webhooks/sparkpost/hard_bounce.json");
    let events = parse(body).unwrap().events;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        value(body, &e.provider_message_id),
        Some("7398362398475647")
    );
    assert_eq!(value(body, &e.provider_event_id), Some("92356927693813856"));
}
