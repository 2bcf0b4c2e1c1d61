//! The compiled connection model seen through `mailplug validate`: every
//! error of a document in one run, defaults settled by one rule, missing
//! fields located where the operator adds them.

use crate::support::{run_in, tree};

const HEAD: &str = "api_version: mailplug/v1\nkind: Connection\nname: a\n";

#[test]
fn a_misspelt_key_and_a_port_security_mismatch_are_reported_in_one_run() {
    // Top-level typo, a typo inside `smtp`, the mismatch and a bad sender:
    // four errors from the schema and the semantic checks, one pass.
    let yaml = format!(
        "{HEAD}dispaly_name: A\nsmtp:\n  host: mx.example.com\n  port: 465\n  security: starttls\n  hots: x\nfrom: {{ email: not-an-address }}\n"
    );
    let dir = tree(&[("a.yaml", yaml.as_bytes())]);
    let run = run_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 78, "{}", run.stdout);
    for want in [
        "./a.yaml:4:1: error: /dispaly_name: unknown field `dispaly_name` (hint: did you mean `display_name`?)",
        "./a.yaml:8:13: error: /smtp/security: port 465 speaks implicit TLS, not STARTTLS",
        "./a.yaml:9:3: error: /smtp/hots: unknown field `hots` (hint: did you mean `host`?)",
        "./a.yaml:10:16: error: /from/email: `not-an-address` is not a valid email address",
    ] {
        assert!(
            run.stdout.contains(want),
            "missing {want:?} in\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("4 errors"), "{}", run.stdout);
}

#[test]
fn a_wrongly_typed_section_does_not_hide_the_checks_of_the_others() {
    let yaml = format!(
        "{HEAD}smtp:\n  host: mx.example.com\n  port: 587\n  security: tls\nfrom: {{ email: a@example.com }}\nlimits: {{ timeout_seconds: fast }}\nworkspaces: [team, team]\n"
    );
    let dir = tree(&[("a.yaml", yaml.as_bytes())]);
    let run = run_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 78, "{}", run.stdout);
    for want in [
        "/smtp/security: port 587 is the STARTTLS submission port",
        "/limits/timeout_seconds: expected an integer, found a string",
        "warning: /workspaces/1: workspace `team` is listed twice",
    ] {
        assert!(
            run.stdout.contains(want),
            "missing {want:?} in\n{}",
            run.stdout
        );
    }
}

#[test]
fn port_465_without_security_is_valid_and_compiles_to_implicit_tls() {
    let yaml = format!(
        "{HEAD}smtp:\n  host: mx.example.com\n  port: 465\n  username: u\n  password: {{ env: X }}\nfrom: {{ email: a@example.com }}\n"
    );
    let dir = tree(&[("a.yaml", yaml.as_bytes())]);
    let run = run_in(dir.path(), &["validate", "--deny-warnings", "."]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("1 valid connection, 0 errors, 0 warnings"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_missing_host_is_reported_at_the_smtp_key() {
    let yaml = format!(
        "{HEAD}smtp:\n  port: 587\n  security: starttls\nfrom: {{ email: a@example.com }}\n"
    );
    let dir = tree(&[("a.yaml", yaml.as_bytes())]);
    let run = run_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 78);
    assert!(
        run.stdout.contains(
            "./a.yaml:4:1: error: /smtp: missing required field `smtp.host` for provider `custom-smtp`"
        ),
        "{}",
        run.stdout
    );
    // A missing required field inside a section: at that section's key.
    let yaml = format!("{HEAD}smtp: {{ host: h }}\nfrom:\n  name: A\n");
    let dir = tree(&[("a.yaml", yaml.as_bytes())]);
    let run = run_in(dir.path(), &["validate", "."]);
    assert!(
        run.stdout
            .contains("./a.yaml:5:1: error: /from: missing required field `email`"),
        "{}",
        run.stdout
    );
}
