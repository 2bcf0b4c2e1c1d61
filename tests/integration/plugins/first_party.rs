//! Golden tests of the first-party provider plugins through
//! `mailplug plugin test`: every shared sample fixture, every case of our
//! own (`tests/fixtures/plugins/<provider>/`), and the shared hostile
//! requests of each provider.

use std::path::Path;

use super::cli_golden::{assert_passes, mailplug, plugin_test_with};
use super::{FIXTURE_NOW, own_fixtures, webhook_fixtures};

/// One first-party plugin's test material.
pub(crate) struct Provider {
    pub plugin: &'static str,
    /// Its folder of shared samples (and `_bad` prefix).
    pub shared: &'static str,
    /// The TEST-ONLY webhook secret from its secrets.txt.
    pub secret: &'static str,
    /// Flags every `plugin test` of it needs (registered URL, SNS trust).
    pub flags: &'static [&'static str],
    /// A secret of the right shape that is not the right one.
    pub wrong: &'static str,
    /// Subfolders of its golden folder run with their own secret.
    pub subfolders: &'static [(&'static str, &'static str)],
}

const SES_FLAGS: &[&str] = &[
    "--sns-topic",
    "arn:aws:sns:us-east-1:111122223333:ses-events",
    "--sns-cert",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000test.pem=../tests/fixtures/webhooks/amazon_ses/TEST_ONLY_sns_signing_cert.pem",
];

pub(crate) const PROVIDERS: &[Provider] = &[
    Provider {
        plugin: "postal",
        shared: "postal",
        secret: "file:../tests/fixtures/webhooks/postal/public_key.pem",
        flags: &[],
        // Another key pair's public key.
        wrong: "file:../tests/fixtures/plugins/postal/other_public_key.pem",
        subfolders: &[],
    },
    Provider {
        plugin: "mailjet",
        shared: "mailjet",
        secret: "mailjet-hook:mj-test-password-8b2e",
        flags: &[],
        wrong: "a-hook:not-the-password",
        subfolders: &[],
    },
    Provider {
        plugin: "postmark",
        shared: "postmark",
        secret: "postmark-hook:pm-test-password-5c1d",
        flags: &[],
        wrong: "a-hook:not-the-password",
        subfolders: &[],
    },
    Provider {
        plugin: "resend",
        shared: "resend",
        secret: "whsec_dxI3KiQrHsD06b2bcIV1aAIgSouRlmi8",
        flags: &[],
        wrong: "whsec_d3JvbmctdGVzdC1vbmx5LWtleQ==",
        subfolders: &[],
    },
    Provider {
        plugin: "mailgun",
        shared: "mailgun",
        secret: "mg-test-signing-key-0f3c9a7e5d1b2468ace0",
        flags: &[],
        wrong: "not-the-signing-key",
        subfolders: &[],
    },
    Provider {
        plugin: "sparkpost",
        shared: "sparkpost",
        secret: "sparkpost-hook:sp-test-password-3a7f",
        flags: &[],
        wrong: "a-hook:not-the-password",
        subfolders: &[("bearer", "bearer:sp-test-token-7c2e9b41d05a")],
    },
    Provider {
        plugin: "brevo",
        shared: "brevo",
        secret: "brevo-test-bearer-token-4d9c1a",
        flags: &[],
        wrong: "not-the-bearer-token",
        subfolders: &[("basic_auth", "brevo-hook:brevo-test-password-7e2b")],
    },
    Provider {
        plugin: "mandrill",
        shared: "mandrill",
        secret: "mandrill-test-webhook-key-7Qp2Zx",
        flags: &[
            "--url",
            "https://hooks.example.test/webhooks/mandrill?tenant=acme",
        ],
        wrong: "not-the-webhook-key",
        subfolders: &[],
    },
    Provider {
        plugin: "amazon-ses",
        shared: "amazon_ses",
        secret: "sns-hook:ses-test-password-9e2a",
        flags: SES_FLAGS,
        wrong: "sns-hook:not-the-password",
        subfolders: &[],
    },
];

/// Every `CASE` of `dir` that has a body and a golden file, sorted.
fn cases(dir: &Path) -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".expected.json").map(str::to_owned))
        .filter(|case| {
            dir.join(format!("{case}.json")).is_file() || dir.join(format!("{case}.form")).is_file()
        })
        .collect();
    cases.sort();
    cases
}

#[test]
fn shared_sample_fixtures_parse_to_exactly_their_expected_events() {
    for p in PROVIDERS {
        let dir = webhook_fixtures().join(p.shared);
        let cases = cases(&dir);
        assert_eq!(
            cases.len(),
            2,
            "{}: the shared sample has two cases",
            p.plugin
        );
        for case in &cases {
            let what = format!("{}/{case}", p.plugin);
            let expect = dir.join(format!("{case}.expected.json"));
            let want: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&expect).unwrap()).unwrap();
            let output =
                plugin_test_with(p.plugin, &dir, case, p.secret, FIXTURE_NOW, None, p.flags);
            assert_passes(&output, &what);
            let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            // A subscription confirmation comes with the request it asks for.
            let events = match got.get("subscription_confirmations") {
                Some(asked) => {
                    assert_eq!(asked.as_array().map(Vec::len), Some(1), "{what}: {got}");
                    got["events"].clone()
                }
                None => got.clone(),
            };
            // The shared golden files name every field; compare those, and
            // exactly as many events must come out.
            assert_eq!(
                events.as_array().map(Vec::len),
                want.as_array().map(Vec::len),
                "{what}: {got}"
            );
            for (got, want) in events
                .as_array()
                .unwrap()
                .iter()
                .zip(want.as_array().unwrap())
            {
                for (field, value) in want.as_object().unwrap() {
                    assert_eq!(&got[field], value, "{what}: field {field} of {got}");
                }
            }
        }
    }
}

/// Every golden folder (and subfolder) of ours, its secret and flags.
fn own_folders() -> Vec<(&'static Provider, std::path::PathBuf, &'static str)> {
    let mut folders = Vec::new();
    for p in PROVIDERS {
        let dir = own_fixtures().join(p.plugin);
        for (sub, secret) in p.subfolders {
            folders.push((p, dir.join(sub), *secret));
        }
        folders.push((p, dir, p.secret));
    }
    folders
}

#[test]
fn own_fixture_folders_pass_plugin_test_fixtures() {
    for (p, dir, secret) in own_folders() {
        let count = cases(&dir).len();
        let min = if dir.ends_with(p.plugin) { 15 } else { 4 };
        assert!(
            count >= min,
            "{}: only {count} cases in {}",
            p.plugin,
            dir.display()
        );
        let output = fixtures_run_with(p.plugin, &dir, secret, p.flags);
        assert_passes(&output, p.plugin);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!(
                "{}: {count} passed, 0 failed, {count} cases",
                p.plugin
            )),
            "{}: {stdout}",
            p.plugin
        );
    }
}

/// `mailplug plugin test PLUGIN --fixtures DIR --secret SECRET --now FIXTURE_NOW`.
pub(super) fn fixtures_run(plugin: &str, dir: &Path, secret: &str) -> std::process::Output {
    fixtures_run_with(plugin, dir, secret, &[])
}

fn fixtures_run_with(
    plugin: &str,
    dir: &Path,
    secret: &str,
    flags: &[&str],
) -> std::process::Output {
    let dir = dir.display().to_string();
    let now = FIXTURE_NOW.to_string();
    let mut args = vec![
        "plugin",
        "test",
        plugin,
        "--fixtures",
        &dir,
        "--secret",
        secret,
        "--now",
        &now,
    ];
    args.extend(flags);
    mailplug(&args)
}

/// A refused case exits 1 (an object golden file names the error); an
/// accepted one exits 0, so every own case is an accepted or a refused one
/// on purpose.
#[test]
fn own_rejections_exit_1_and_accepted_cases_exit_0() {
    for (p, dir, secret) in own_folders() {
        let plugin = p.plugin;
        let mut refused = 0;
        for case in cases(&dir) {
            let expected: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.join(format!("{case}.expected.json"))).unwrap(),
            )
            .unwrap();
            let output = plugin_test_with(plugin, &dir, &case, secret, FIXTURE_NOW, None, p.flags);
            // Refused cases name the error; an object with `events` is an
            // accepted subscription confirmation.
            let rejected = expected.is_object() && expected.get("events").is_none();
            refused += usize::from(rejected);
            assert_eq!(
                output.status.code(),
                Some(i32::from(rejected)),
                "{plugin}/{case}"
            );
        }
        let min = if dir.ends_with(plugin) { 4 } else { 1 };
        assert!(
            refused >= min,
            "{plugin}: only {refused} refused cases in {}",
            dir.display()
        );
    }
}

#[test]
fn a_wrong_secret_refuses_every_signed_sample() {
    for p in PROVIDERS {
        let dir = webhook_fixtures().join(p.shared);
        for case in cases(&dir) {
            let output =
                plugin_test_with(p.plugin, &dir, &case, p.wrong, FIXTURE_NOW, None, p.flags);
            assert_eq!(output.status.code(), Some(1), "{}/{case}", p.plugin);
            let stdout: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(
                stdout["verify_error"]["kind"], "bad-signature",
                "{}/{case}: {stdout}",
                p.plugin
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
    for p in PROVIDERS {
        for case in cases_with_prefix(&dir, &format!("{}__", p.shared)) {
            seen += 1;
            let expect: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.join(format!("{case}.expect.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(expect["status"], 401, "{case}");
            let now = expect["clock_now"].as_i64().unwrap();
            let output = plugin_test_with(p.plugin, &dir, &case, p.secret, now, None, p.flags);
            assert_eq!(output.status.code(), Some(1), "{case}");
            let stdout: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert!(stdout.get("verify_error").is_some(), "{case}: {stdout}");
        }
    }
    // postmark, resend, mailgun, mandrill, amazon_ses (sendgrid's are
    // covered with the custom-smtp-era tests of cli_golden.rs).
    assert_eq!(seen, 5, "the shared _bad cases of these providers");
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
