//! `mailplug plugin test|inspect|list` run as a user would, against the
//! provider webhook fixtures and our own golden fixtures.

use std::path::Path;
use std::process::{Command, Output};

use super::{
    FIXTURE_NOW, SG_PUBLIC_KEY, SW_SECRET, cache_dir, guest, own_fixtures, webhook_fixtures,
};

pub(super) fn mailplug(args: &[&str]) -> Output {
    mailplug_in(&std::env::current_dir().unwrap(), args)
}

/// Runs `mailplug` with `cwd` as the working directory.
fn mailplug_in(cwd: &Path, args: &[&str]) -> Output {
    let data_dir = cache_dir().parent().unwrap().to_owned();
    Command::new(env!("CARGO_BIN_EXE_mailplug"))
        .current_dir(cwd)
        .args(args)
        .env("MAILPLUG_DATA_DIR", data_dir)
        .output()
        .expect("run mailplug")
}

/// `--header 'Name: value'` arguments from a fixture's headers.json.
fn header_args(path: &Path) -> Vec<String> {
    let headers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    headers
        .iter()
        .flat_map(|(k, v)| {
            [
                "--header".to_owned(),
                format!("{k}: {}", v.as_str().unwrap()),
            ]
        })
        .collect()
}

/// Runs `plugin test custom-smtp` on `dir/case` with the golden `expect` file.
fn golden(dir: &Path, case: &str, secret: &str, now: i64, expect: &Path) -> Output {
    plugin_test("custom-smtp", dir, case, secret, now, Some(expect))
}

/// Runs `plugin test <plugin>` on `dir/case` (body `case.json`, headers
/// `case.headers.json`), verifying with `secret`, with an optional golden file.
pub(super) fn plugin_test(
    plugin: &str,
    dir: &Path,
    case: &str,
    secret: &str,
    now: i64,
    expect: Option<&Path>,
) -> Output {
    plugin_test_with(plugin, dir, case, secret, now, expect, &[])
}

/// [`plugin_test`] with more flags (`--url`, `--sns-*`); the body is
/// `case.form` when there is one.
pub(super) fn plugin_test_with(
    plugin: &str,
    dir: &Path,
    case: &str,
    secret: &str,
    now: i64,
    expect: Option<&Path>,
    flags: &[&str],
) -> Output {
    let form = dir.join(format!("{case}.form"));
    let body = if form.is_file() {
        form
    } else {
        dir.join(format!("{case}.json"))
    };
    let mut args = vec!["plugin".to_owned(), "test".to_owned(), plugin.to_owned()];
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    args.extend(["--body".to_owned(), body.display().to_string()]);
    args.extend(header_args(&dir.join(format!("{case}.headers.json"))));
    args.extend([
        "--secret".to_owned(),
        secret.to_owned(),
        "--now".to_owned(),
        now.to_string(),
    ]);
    if let Some(expect) = expect {
        args.extend(["--expect".to_owned(), expect.display().to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    mailplug(&refs)
}

pub(super) fn assert_passes(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn shared_standard_webhooks_fixtures_match_their_golden_files() {
    let dir = webhook_fixtures().join("standard_webhooks");
    for case in ["hard_bounce_v1", "complaint_rotated_keys"] {
        let output = golden(
            &dir,
            case,
            SW_SECRET,
            FIXTURE_NOW,
            &dir.join(format!("{case}.expected.json")),
        );
        assert_passes(&output, case);
    }
}

#[test]
fn own_fixtures_match_their_golden_files() {
    let dir = own_fixtures();
    for case in [
        "unified_array",
        "unified_single",
        "envelope_deferred",
        "envelope_no_unified_kind",
        "malformed_json",
        "unknown_kind",
        "deep_nesting",
        "deep_in_ignored_field",
        "tampered_body",
    ] {
        let output = golden(
            &dir,
            case,
            SW_SECRET,
            FIXTURE_NOW,
            &dir.join(format!("{case}.expected.json")),
        );
        assert_passes(&output, case);
    }
}

#[test]
fn replayed_request_is_rejected_when_the_clock_is_not_pinned_back() {
    let webhooks = webhook_fixtures().join("standard_webhooks");
    let expect = own_fixtures().join("replay.expected.json");
    let output = golden(
        &webhooks,
        "hard_bounce_v1",
        SW_SECRET,
        1_767_268_800 + 7_230,
        &expect,
    );
    assert_passes(&output, "replay");
}

#[test]
fn a_golden_mismatch_exits_1_with_a_readable_diff() {
    let dir = webhook_fixtures().join("standard_webhooks");
    // The complaint's output compared against the bounce's golden file.
    let body = dir.join("complaint_rotated_keys.json");
    let expect = dir.join("hard_bounce_v1.expected.json");
    let output = mailplug(&[
        "plugin",
        "test",
        "custom-smtp",
        "--body",
        body.to_str().unwrap(),
        "--expect",
        expect.to_str().unwrap(),
        "--now",
        &FIXTURE_NOW.to_string(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[0].kind: expected \"bounced\", got \"complained\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("[0].smtp_status: expected \"550\", got null"),
        "{stderr}"
    );
}

#[test]
fn bad_signature_without_expect_exits_1_and_says_why() {
    let dir = own_fixtures();
    let output = mailplug(&[
        "plugin",
        "test",
        "custom-smtp",
        "--body",
        dir.join("tampered_body.json").to_str().unwrap(),
        "--headers-file",
        dir.join("tampered_body.headers.json").to_str().unwrap(),
        "--secret",
        SW_SECRET,
        "--now",
        &FIXTURE_NOW.to_string(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("bad-signature"));
}

#[test]
fn secret_references_resolve_from_env_and_file() {
    let dir = webhook_fixtures().join("standard_webhooks");
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), format!("{SW_SECRET}\n")).unwrap();
    let reference = format!("file:{}", secret_file.path().display());
    let output = golden(
        &dir,
        "hard_bounce_v1",
        &reference,
        FIXTURE_NOW,
        &dir.join("hard_bounce_v1.expected.json"),
    );
    assert_passes(&output, "file: secret");
    let output = golden(
        &dir,
        "hard_bounce_v1",
        "env:MAILPLUG_TEST_UNSET_SECRET",
        FIXTURE_NOW,
        &dir.join("hard_bounce_v1.expected.json"),
    );
    assert_eq!(output.status.code(), Some(70));
    assert!(String::from_utf8_lossy(&output.stderr).contains("MAILPLUG_TEST_UNSET_SECRET"));
}

#[test]
fn list_and_inspect_show_the_first_party_plugin() {
    let output = mailplug(&["plugin", "list"]);
    assert_passes(&output, "list");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Sorted by id, one line per first-party plugin.
    let ids: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        ids,
        [
            "amazon-ses",
            "brevo",
            "custom-smtp",
            "mailgun",
            "mailjet",
            "mandrill",
            "postal",
            "postmark",
            "resend",
            "sendgrid",
            "sparkpost"
        ],
        "{stdout}"
    );
    // The capabilities column lines up even with a long display name.
    let column: Vec<usize> = stdout
        .lines()
        .map(|l| l.find("adapts-smtp").unwrap())
        .collect();
    assert!(column.windows(2).all(|w| w[0] == w[1]), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("sendgrid ")
            && l.contains("SendGrid")
            && l.contains("adapts-smtp,verifies-webhooks,parses-webhooks")),
        "{stdout}"
    );
    let output = mailplug(&["plugin", "inspect", "custom-smtp"]);
    assert_passes(&output, "inspect");
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["describe"]["id"], "custom-smtp");
    assert_eq!(info["describe"]["options_schema"]["type"], "object");
    assert_eq!(info["limits"]["memory_mib"], 32);
}

#[test]
fn inspect_and_test_accept_a_wasm_file() {
    let example = guest("example_provider");
    let output = mailplug(&["plugin", "inspect", example.to_str().unwrap()]);
    assert_passes(&output, "inspect file");
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["describe"]["id"], "example");
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), br#"[{"event":"bounce","email":"x@example.com","time":"2026-01-01T12:00:00Z","reason":"550 5.1.1 no such user"}]"#).unwrap();
    let output = mailplug(&[
        "plugin",
        "test",
        example.to_str().unwrap(),
        "--body",
        body.path().to_str().unwrap(),
    ]);
    assert_passes(&output, "test file");
    let events: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(events[0]["enhanced_status"], "5.1.1");
}

#[test]
fn hostile_wasm_file_fails_cleanly_in_the_cli() {
    let hostile = guest("hostile");
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), b"loop").unwrap();
    let output = mailplug(&[
        "plugin",
        "test",
        hostile.to_str().unwrap(),
        "--body",
        body.path().to_str().unwrap(),
        "--deadline-ms",
        "30",
    ]);
    assert_eq!(output.status.code(), Some(70));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "plugin `hostile` failed in `parse-webhook`: did not finish within its 30 ms deadline"
        ),
        "{stderr}"
    );
    let output = mailplug(&["plugin", "inspect", guest("oversized").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("could not be instantiated"));
}

#[test]
fn unknown_plugin_id_is_a_usage_error() {
    let output = mailplug(&["plugin", "inspect", "no-such-provider"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("first-party plugins: amazon-ses, brevo, custom-smtp")
    );
}

#[test]
fn guest_stdout_and_stderr_reach_the_log_tagged_with_the_plugin() {
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), b"print").unwrap();
    let hostile = guest("hostile");
    let output = mailplug(&[
        "plugin",
        "test",
        hostile.to_str().unwrap(),
        "--body",
        body.path().to_str().unwrap(),
    ]);
    assert_passes(&output, "print");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // stdout lines are logged at info (shown with -v), stderr lines at warn.
    assert!(stderr.contains("hello from the guest's stderr"), "{stderr}");
    assert!(
        stderr.contains("plugin=hostile") || stderr.contains("plugin=\"hostile\""),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("hello from"),
        "guest output must not mix into the events"
    );
    let output = mailplug(&[
        "plugin",
        "test",
        hostile.to_str().unwrap(),
        "--body",
        body.path().to_str().unwrap(),
        "-v",
    ]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("hello from the guest's stdout"));
}

#[test]
fn shared_sendgrid_fixtures_match_their_golden_files() {
    let dir = webhook_fixtures().join("sendgrid");
    for case in ["hard_bounce", "batch_mixed"] {
        let expect = dir.join(format!("{case}.expected.json"));
        let output = plugin_test(
            "sendgrid",
            &dir,
            case,
            SG_PUBLIC_KEY,
            FIXTURE_NOW,
            Some(&expect),
        );
        assert_passes(&output, case);
    }
}

/// Our own SendGrid cases: every event kind, batches, and every way a
/// request is refused (each golden file names the exact error).
const SENDGRID_CASES: &[&str] = &[
    "delivered",
    "deferred",
    "bounce_hard",
    "bounce_blocked",
    "bounce_untyped",
    "dropped",
    "spamreport",
    "open",
    "click",
    "unsubscribe",
    "group_unsubscribe",
    "no_unified_kind",
    "custom_args_and_escapes",
    "empty_batch",
    "missing_email",
    "not_an_array",
    "deep_nesting",
    "tampered_body",
    "garbage_signature",
    "missing_signature",
    "future_timestamp",
];

#[test]
fn own_sendgrid_fixtures_match_their_golden_files() {
    let dir = own_fixtures().join("sendgrid");
    for case in SENDGRID_CASES {
        let expect = dir.join(format!("{case}.expected.json"));
        let output = plugin_test(
            "sendgrid",
            &dir,
            case,
            SG_PUBLIC_KEY,
            FIXTURE_NOW,
            Some(&expect),
        );
        assert_passes(&output, case);
    }
}

#[test]
fn sendgrid_rejections_exit_1_and_say_whether_verify_or_parse_failed() {
    let dir = own_fixtures().join("sendgrid");
    for case in SENDGRID_CASES {
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{case}.expected.json"))).unwrap(),
        )
        .unwrap();
        let output = plugin_test("sendgrid", &dir, case, SG_PUBLIC_KEY, FIXTURE_NOW, None);
        let rejected = expected.is_object();
        assert_eq!(output.status.code(), Some(i32::from(rejected)), "{case}");
    }
}

/// The webhook fixtures' hostile requests: 401 cases must fail verification, 400 cases
/// must pass it and fail parsing; both exit 1.
#[test]
fn shared_bad_sendgrid_requests_fail_verification_or_parsing_as_their_status_says() {
    let dir = webhook_fixtures().join("_bad");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(case) = name
            .strip_suffix(".expect.json")
            .filter(|c| c.starts_with("sendgrid__"))
        else {
            continue;
        };
        seen += 1;
        let expect: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(&name)).unwrap()).unwrap();
        let now = expect["clock_now"].as_i64().unwrap();
        let output = plugin_test("sendgrid", &dir, case, SG_PUBLIC_KEY, now, None);
        assert_eq!(output.status.code(), Some(1), "{case}");
        let stdout: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let stage = match expect["status"].as_u64().unwrap() {
            401 | 403 => "verify_error",
            400 => "parse_error",
            other => panic!("{case}: unexpected status {other}"),
        };
        assert!(stdout.get(stage).is_some(), "{case}: {stdout}");
    }
    assert_eq!(seen, 3, "expected the three _bad/ sendgrid cases");
    // The exact reasons, as golden files.
    let own = own_fixtures().join("sendgrid");
    for case in ["tampered_body", "replayed_old_timestamp", "truncated_json"] {
        let expect = own.join(format!("shared_{case}.expected.json"));
        let output = plugin_test(
            "sendgrid",
            &dir,
            &format!("sendgrid__{case}"),
            SG_PUBLIC_KEY,
            FIXTURE_NOW,
            Some(&expect),
        );
        assert_passes(&output, case);
    }
}

#[test]
fn a_directory_named_like_a_plugin_does_not_shadow_it() {
    // The webhook fixtures keep SendGrid's cases in a `sendgrid/` directory.
    let output = mailplug_in(&webhook_fixtures(), &["plugin", "inspect", "sendgrid"]);
    assert_passes(&output, "inspect from the fixtures directory");
}
