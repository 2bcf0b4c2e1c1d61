//! Golden tests of the first-party provider plugins through
//! `mailplug plugin test`: every shared sample fixture, every case of our
//! own (`tests/fixtures/plugins/<provider>/`), and the shared hostile
//! requests of each provider.

use std::path::Path;

use super::cli_golden::{assert_passes, mailplug, plugin_test};
use super::{FIXTURE_NOW, own_fixtures, webhook_fixtures};

/// (plugin, fixture directory, TEST-ONLY webhook secret from its secrets.txt).
pub(crate) const PROVIDERS: &[(&str, &str, &str)] = &[
    (
        "postal",
        "postal",
        "file:../tests/fixtures/webhooks/postal/public_key.pem",
    ),
    ("mailjet", "mailjet", "mailjet-hook:mj-test-password-8b2e"),
    (
        "postmark",
        "postmark",
        "postmark-hook:pm-test-password-5c1d",
    ),
    ("resend", "resend", "whsec_dxI3KiQrHsD06b2bcIV1aAIgSouRlmi8"),
    (
        "mailgun",
        "mailgun",
        "mg-test-signing-key-0f3c9a7e5d1b2468ace0",
    ),
];

/// Every `CASE` of `dir` that has a body and a golden file, sorted.
fn cases(dir: &Path) -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".expected.json").map(str::to_owned))
        .filter(|case| dir.join(format!("{case}.json")).is_file())
        .collect();
    cases.sort();
    cases
}

#[test]
fn shared_sample_fixtures_parse_to_exactly_their_expected_events() {
    for (plugin, dir, secret) in PROVIDERS {
        let dir = webhook_fixtures().join(dir);
        let cases = cases(&dir);
        assert_eq!(cases.len(), 2, "{plugin}: the shared sample has two cases");
        for case in &cases {
            let expect = dir.join(format!("{case}.expected.json"));
            let output = plugin_test(plugin, &dir, case, secret, FIXTURE_NOW, Some(&expect));
            assert_passes(&output, &format!("{plugin}/{case}"));
            // The golden comparison covers only the fields a golden file
            // names; the shared ones name every field, and exactly as many
            // events must come out.
            let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let want: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&expect).unwrap()).unwrap();
            assert_eq!(
                got.as_array().map(Vec::len),
                want.as_array().map(Vec::len),
                "{plugin}/{case}: {got}"
            );
        }
    }
}

#[test]
fn own_fixture_folders_pass_plugin_test_fixtures() {
    for (plugin, _, secret) in PROVIDERS {
        let dir = own_fixtures().join(plugin);
        let count = cases(&dir).len();
        assert!(count >= 15, "{plugin}: only {count} cases");
        let output = fixtures_run(plugin, &dir, secret);
        assert_passes(&output, plugin);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!(
                "{plugin}: {count} passed, 0 failed, {count} cases"
            )),
            "{plugin}: {stdout}"
        );
    }
}

/// `mailplug plugin test PLUGIN --fixtures DIR --secret SECRET --now FIXTURE_NOW`.
pub(super) fn fixtures_run(plugin: &str, dir: &Path, secret: &str) -> std::process::Output {
    let dir = dir.display().to_string();
    let now = FIXTURE_NOW.to_string();
    mailplug(&[
        "plugin",
        "test",
        plugin,
        "--fixtures",
        &dir,
        "--secret",
        secret,
        "--now",
        &now,
    ])
}

/// A refused case exits 1 (an object golden file names the error); an
/// accepted one exits 0, so every own case is an accepted or a refused one
/// on purpose.
#[test]
fn own_rejections_exit_1_and_accepted_cases_exit_0() {
    for (plugin, _, secret) in PROVIDERS {
        let dir = own_fixtures().join(plugin);
        let mut refused = 0;
        for case in cases(&dir) {
            let expected: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.join(format!("{case}.expected.json"))).unwrap(),
            )
            .unwrap();
            let output = plugin_test(plugin, &dir, &case, secret, FIXTURE_NOW, None);
            let rejected = expected.is_object();
            refused += usize::from(rejected);
            assert_eq!(
                output.status.code(),
                Some(i32::from(rejected)),
                "{plugin}/{case}"
            );
        }
        assert!(refused >= 4, "{plugin}: only {refused} refused cases");
    }
}

#[test]
fn a_wrong_secret_refuses_every_signed_sample() {
    for (plugin, dir, _) in PROVIDERS {
        let dir = webhook_fixtures().join(dir);
        for case in cases(&dir) {
            let wrong = match *plugin {
                "postmark" | "mailjet" | "sparkpost" => "a-hook:not-the-password",
                // Another key pair's public key.
                "postal" => "file:../tests/fixtures/plugins/postal/other_public_key.pem",
                "resend" => "whsec_d3JvbmctdGVzdC1vbmx5LWtleQ==",
                _ => "not-the-signing-key",
            };
            let output = plugin_test(plugin, &dir, &case, wrong, FIXTURE_NOW, None);
            assert_eq!(output.status.code(), Some(1), "{plugin}/{case}");
            let stdout: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(
                stdout["verify_error"]["kind"], "bad-signature",
                "{plugin}/{case}: {stdout}"
            );
        }
    }
}

/// The shared hostile requests of these providers fail verification (their
/// documented status is 401).
#[test]
fn shared_bad_requests_fail_verification() {
    let dir = webhook_fixtures().join("_bad");
    let mut seen = 0;
    for (plugin, prefix, secret) in PROVIDERS {
        for case in cases_with_prefix(&dir, &format!("{prefix}__")) {
            seen += 1;
            let expect: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.join(format!("{case}.expect.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(expect["status"], 401, "{case}");
            let now = expect["clock_now"].as_i64().unwrap();
            let output = plugin_test(plugin, &dir, &case, secret, now, None);
            assert_eq!(output.status.code(), Some(1), "{case}");
            let stdout: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert!(stdout.get("verify_error").is_some(), "{case}: {stdout}");
        }
    }
    assert_eq!(seen, 3, "one shared _bad case per provider");
}

fn cases_with_prefix(dir: &Path, prefix: &str) -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".expect.json").map(str::to_owned))
        .filter(|c| c.starts_with(prefix))
        .collect();
    cases.sort();
    cases
}
