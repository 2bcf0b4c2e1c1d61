//! `mailplug validate` end to end: valid examples, every kind of bad input,
//! positions, hints, output formats and exit codes.

use std::fmt::Write as _;

use crate::support::{connection, repo_root, run_in, tree};

const CONFIG_ERROR: i32 = 78;

fn validate(dir: &std::path::Path, extra: &[&str]) -> crate::support::Run {
    let mut args = vec!["validate"];
    args.extend_from_slice(extra);
    args.push(".");
    run_in(dir, &args)
}

#[test]
fn every_example_file_is_valid() {
    let root = repo_root();
    let examples: Vec<_> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    assert!(examples.len() >= 4, "expected at least four examples");
    for example in &examples {
        let text = std::fs::read_to_string(example).unwrap();
        let forwarder =
            text.starts_with("# yaml-language-server: $schema=../schemas/forwarder.schema.json");
        assert!(
            forwarder
                || text.starts_with(
                    "# yaml-language-server: $schema=../schemas/connection.schema.json"
                ),
            "{} lacks the schema modeline",
            example.display()
        );
        let run = run_in(
            &root,
            &["validate", "--deny-warnings", example.to_str().unwrap()],
        );
        assert_eq!(
            run.code,
            0,
            "{}: {}{}",
            example.display(),
            run.stdout,
            run.stderr
        );
        let summary = if forwarder {
            "0 valid connections, 1 valid forwarder,"
        } else {
            "1 valid connection,"
        };
        assert!(run.stdout.contains(summary), "{}", run.stdout);
    }
}

#[test]
fn checked_in_schemas_match_the_code() {
    let root = repo_root();
    let run = run_in(&root, &["schema", "--check", "--out", "schemas"]);
    assert_eq!(run.code, 0, "schema drift: {}", run.stderr);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("connection.schema.json"), "{}").unwrap();
    let run = run_in(dir.path(), &["schema", "--check", "--out", "."]);
    assert_eq!(run.code, 1, "drift must be detected");
    assert!(
        run.stderr.contains("connection.schema.json: differs"),
        "{}",
        run.stderr
    );
}

#[test]
fn valid_tree_exits_zero_with_summary() {
    let dir = tree(&[
        ("a.yaml", connection("alpha").as_bytes()),
        ("nested/deeper/b.yml", connection("beta").as_bytes()),
        ("notes.txt", b"not yaml, ignored"),
        (".git/config.yaml", b"ignored: [hidden"),
    ]);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        run.stdout.trim(),
        "2 files, 2 documents, 2 valid connections, 0 errors, 0 warnings"
    );
}

#[test]
fn schema_errors_point_at_the_offending_key_or_value_with_hints() {
    let bad = "api_version: mailplug/v1\nkind: Connection\nname: Corp_Relay\nsmtp:\n  host: smtp.example.com\n  port: \"587\"\n  secuirty: starttls\n  security: starttsl\nfrom:\n  name: x\nlimits: { max_connections: 0 }\n";
    let dir = tree(&[("bad.yaml", bad.as_bytes())]);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, CONFIG_ERROR);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let expect = [
        "./bad.yaml:3:7: error: /name: does not match the pattern",
        "./bad.yaml:6:9: error: /smtp/port: expected an integer, found a string",
        "./bad.yaml:7:3: error: /smtp/secuirty: unknown field `secuirty` (hint: did you mean `security`?)",
        "./bad.yaml:8:13: error: /smtp/security: `starttsl` is not one of: starttls, tls, none (hint: did you mean `starttls`?)",
        "./bad.yaml:9:1: error: /from: missing required field `email`",
        "./bad.yaml:11:28: error: /limits/max_connections: must be at least 1",
    ];
    for want in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout
            .ends_with("1 file, 1 document, 0 valid connections, 6 errors, 0 warnings\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn json_format_has_every_field_and_summary_on_stderr() {
    let dir = tree(&[("x.yaml", b"api_version: mailplug/v1\nkind: Connection\nname: x\nfrom: {email: a@example.com}\nsmtp: {host: h, prot: 25}\n")]);
    let run = validate(dir.path(), &["--format", "json"]);
    assert_eq!(run.code, CONFIG_ERROR);
    let items: serde_json::Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    let first = &items[0];
    assert_eq!(first["file"], "./x.yaml");
    assert_eq!(first["line"], 5);
    assert_eq!(first["column"], 17);
    assert_eq!(first["severity"], "error");
    assert_eq!(first["pointer"], "/smtp/prot");
    assert_eq!(first["message"], "unknown field `prot`");
    assert_eq!(first["hint"], "did you mean `port`?");
    assert!(run.stderr.contains("1 error"), "{}", run.stderr);
}

#[test]
fn semantic_checks_catch_mismatches_plaintext_credentials_and_bad_senders() {
    let doc = |name: &str, smtp: &str, from: &str| {
        format!(
            "api_version: mailplug/v1\nkind: Connection\nname: {name}\nsmtp: {smtp}\nfrom: {{ email: \"{from}\" }}\n"
        )
    };
    let files = [
        doc(
            "a",
            "{ host: h, port: 465, security: starttls }",
            "a@example.com",
        ),
        doc(
            "b",
            "{ host: h, port: 587, security: tls }",
            "b@example.com",
        ),
        doc(
            "c",
            "{ host: h, port: 25, security: none, username: u, password: { env: P } }",
            "c@example.com",
        ),
        doc("d", "{ host: h }", "Acme <d@example.com>"),
        doc("e", "{ host: h }", "not-an-address"),
        "api_version: mailplug/v1\nkind: Connection\nname: f\nfrom: { email: f@example.com }\n"
            .to_owned(),
    ];
    let files: Vec<(String, Vec<u8>)> = files
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("{i}.yaml"), d.clone().into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let dir = tree(&refs);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, CONFIG_ERROR);
    for want in [
        "./0.yaml:4:39: error: /smtp/security: port 465 speaks implicit TLS, not STARTTLS (hint: use `security: tls`",
        "./1.yaml:4:39: error: /smtp/security: port 587 is the STARTTLS submission port",
        "./2.yaml:4:67: error: /smtp/password: credentials with `security: none` would be sent unencrypted",
        "./3.yaml:5:16: error: /from/email: `from.email` must be a bare address (hint: put the display name in `from.name`",
        "./4.yaml:5:16: error: /from/email: `not-an-address` is not a valid email address",
        "./5.yaml:1:1: error: /: missing required field `smtp.host` for provider `custom-smtp`",
    ] {
        assert!(
            run.stdout.contains(want),
            "missing {want:?} in\n{}",
            run.stdout
        );
    }
}

#[test]
fn literal_secrets_warn_and_deny_warnings_fails_without_printing_the_secret() {
    let doc = connection("lit").replace("{ env: SMTP_PASSWORD }", "Tr0ub4dor&3-literal");
    let dir = tree(&[("lit.yaml", doc.as_bytes())]);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, 0, "warnings alone pass: {}", run.stdout);
    assert!(
        run.stdout
            .contains("./lit.yaml:9:13: warning: /smtp/password: secret written inline"),
        "{}",
        run.stdout
    );
    let strict = validate(dir.path(), &["--deny-warnings"]);
    assert_eq!(strict.code, CONFIG_ERROR);
    let json = validate(dir.path(), &["--format", "json"]);
    for out in [
        &run.stdout,
        &strict.stdout,
        &json.stdout,
        &run.stderr,
        &json.stderr,
    ] {
        assert!(!out.contains("Tr0ub4dor"), "secret leaked: {out}");
    }
}

#[test]
fn check_secrets_reports_unresolvable_references_without_values() {
    let doc = connection("sec").replace("SMTP_PASSWORD", "MAILPLUG_IT_UNSET_VAR");
    let with_file = connection("sec2").replace("{ env: SMTP_PASSWORD }", "{ file: pw.txt }");
    let dir = tree(&[("a.yaml", doc.as_bytes()), ("b.yaml", with_file.as_bytes())]);
    assert_eq!(
        validate(dir.path(), &[]).code,
        0,
        "references are not resolved by default"
    );
    let run = validate(dir.path(), &["--check-secrets"]);
    assert_eq!(run.code, CONFIG_ERROR);
    assert!(run.stdout.contains("./a.yaml:9:13: error: /smtp/password: cannot resolve secret: environment variable `MAILPLUG_IT_UNSET_VAR` is not set"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "./b.yaml:9:13: error: /smtp/password: cannot resolve secret: cannot read secret file"
        ),
        "{}",
        run.stdout
    );
    std::fs::write(dir.path().join("pw.txt"), "file-secret-value\n").unwrap();
    let run = crate::support::mailplug()
        .current_dir(dir.path())
        .env("MAILPLUG_IT_UNSET_VAR", "env-secret-value")
        .args(["validate", "--check-secrets", "."])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{out}");
    assert!(!out.contains("secret-value"));
}

#[test]
fn duplicate_names_are_reported_at_both_places() {
    let dir = tree(&[
        ("one.yaml", connection("same").as_bytes()),
        ("two/x.yaml", connection("same").as_bytes()),
    ]);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, CONFIG_ERROR);
    assert!(run.stdout.contains("./one.yaml:3:7: error: /name: duplicate connection name `same` (hint: also defined at ./two/x.yaml:3:7)"), "{}", run.stdout);
    assert!(run.stdout.contains("./two/x.yaml:3:7: error: /name: duplicate connection name `same` (hint: also defined at ./one.yaml:3:7)"), "{}", run.stdout);
}

#[test]
fn multi_document_files_report_each_document_at_its_own_lines() {
    let text = format!(
        "{}---\n{}---\nkind: Conection\n",
        connection("first"),
        connection("second")
    );
    let dir = tree(&[("multi.yaml", text.as_bytes())]);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, CONFIG_ERROR);
    assert!(run.stdout.contains("./multi.yaml:27:7: error: /kind: unknown kind `Conection`; expected one of: Connection, Plugin, Forwarder, Workspace (hint: did you mean `Connection`?)"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("1 file, 3 documents, 0 valid connections, 1 error"),
        "{}",
        run.stdout
    );
}

/// Runs validate on one file with the given bytes and returns its output.
fn bad_file(name: &str, bytes: &[u8]) -> String {
    let dir = tree(&[(name, bytes)]);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, CONFIG_ERROR, "{}{}", run.stdout, run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("./{name}:")),
        "error must name the file: {}",
        run.stdout
    );
    run.stdout
}

#[test]
fn yaml_syntax_error_is_located() {
    // Unclosed, so reported at the bracket rather than where the parser
    // gave up on the next line.
    let out = bad_file("syntax.yaml", b"kind: Connection\nname: [a, b\nfrom: x\n");
    assert!(
        out.contains("./syntax.yaml:2:7: error: /: YAML syntax error:"),
        "{out}"
    );
}

#[test]
fn unclosed_bracket_names_the_line_it_opens_on() {
    let text = connection("alpha").replace("security: starttls", "security: [starttls, tls");
    assert_eq!(text.lines().nth(6), Some("  security: [starttls, tls"));
    let out = bad_file("unclosed.yaml", text.as_bytes());
    assert!(
        out.contains("./unclosed.yaml:7:13: error: /: YAML syntax error: unclosed `[` opened here"),
        "{out}"
    );
    // The parser's own position stays in the message.
    assert!(out.contains("gave up at line 8, column 11"), "{out}");
}

#[test]
fn empty_and_comment_only_files_are_errors() {
    let out = bad_file("empty.yaml", b"");
    assert!(out.contains("./empty.yaml:1:1: error: /: no YAML documents (the file is empty or holds only comments)"), "{out}");
    let out = bad_file("comments.yml", b"# nothing here\n   # still nothing\n");
    assert!(
        out.contains("./comments.yml:1:1: error: /: no YAML documents"),
        "{out}"
    );
}

#[test]
fn non_utf8_and_binary_files_are_refused() {
    let out = bad_file("latin1.yaml", b"kind: Connection\nname: caf\xe9\n");
    assert!(
        out.contains("./latin1.yaml:2:10: error: /: not valid UTF-8 (byte offset 26)"),
        "{out}"
    );
    let mut binary = b"\x7fELF\x02\x01\x01\x00".to_vec();
    binary.extend((0u8..=255).cycle().take(4096));
    let out = bad_file("binary.yaml", &binary);
    assert!(
        out.contains("./binary.yaml:1:8: error: /: binary file (contains NUL bytes)"),
        "{out}"
    );
}

#[test]
fn a_50_mb_file_is_refused_by_size() {
    let big = "# padding\n".repeat(5 * 1024 * 1024);
    let out = bad_file("huge.yaml", big.as_bytes());
    assert!(
        out.contains(
            "./huge.yaml:1:1: error: /: file is 50.0 MiB; configuration files are limited to 1 MiB"
        ),
        "{out}"
    );
}

#[test]
fn alias_bomb_is_refused() {
    let mut text = String::from(
        "api_version: mailplug/v1\nkind: Connection\nname: bomb\nopts0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        writeln!(
            text,
            "opts{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]"
        )
        .unwrap();
    }
    let out = bad_file("bomb.yaml", text.as_bytes());
    assert!(
        out.contains("error: /: document expands to more than 100000 nodes (alias/anchor bomb?)"),
        "{out}"
    );
}

#[test]
fn ten_thousand_levels_of_nesting_are_refused() {
    let flow = format!("options: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let out = bad_file("flow.yaml", flow.as_bytes());
    assert!(out.contains("error: /: nesting deeper than"), "{out}");
    // Block style: `- - - ...` nests one sequence per dash.
    let block = format!("options:\n  {}x\n", "- ".repeat(10_000));
    let out = bad_file("block.yaml", block.as_bytes());
    assert!(
        out.contains("error: /: nesting deeper than 64 levels"),
        "{out}"
    );
}

#[test]
fn symlink_loop_in_config_dir_is_reported() {
    let dir = tree(&[("ok.yaml", connection("ok").as_bytes())]);
    std::os::unix::fs::symlink(".", dir.path().join("sub")).unwrap();
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, CONFIG_ERROR, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("./sub:1:1: error: /: symlink loop: points back to ."),
        "{}",
        run.stdout
    );
}

#[test]
fn unreadable_files_are_reported() {
    let dir = tree(&[("ok.yaml", connection("ok").as_bytes())]);
    std::os::unix::fs::symlink("/nonexistent/target.yaml", dir.path().join("dangling.yaml"))
        .unwrap();
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, CONFIG_ERROR, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("./dangling.yaml:1:1: error: /: cannot read: No such file or directory"),
        "{}",
        run.stdout
    );

    use std::os::unix::fs::PermissionsExt as _;
    let locked = dir.path().join("locked.yaml");
    std::fs::write(&locked, connection("locked")).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads mode-000 files anyway; only check the permission case where it applies.
    if std::fs::read(&locked).is_err() {
        let run = validate(dir.path(), &[]);
        assert!(
            run.stdout
                .contains("./locked.yaml:1:1: error: /: cannot read: Permission denied"),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn directory_without_yaml_is_an_error() {
    let dir = tree(&[("README.md", b"# nothing")]);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, CONFIG_ERROR);
    assert!(
        run.stdout
            .contains(".:1:1: error: /: no *.yaml or *.yml files in this directory"),
        "{}",
        run.stdout
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_in(dir.path(), &["validate"]).code, 2);
    assert_eq!(
        run_in(dir.path(), &["validate", "--frobnicate", "."]).code,
        2
    );
    let missing = run_in(dir.path(), &["validate", "does-not-exist"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("does-not-exist: No such file or directory"),
        "{}",
        missing.stderr
    );
}

#[test]
fn wrong_types_and_missing_fields_are_reported_together() {
    let out = bad_file("types.yaml", b"api_version: mailplug/v2\nkind: Connection\nname: 42\nworkspaces: marketing\nlimits: { timeout_seconds: fast }\n");
    for want in [
        "./types.yaml:1:14: error: /api_version: `mailplug/v2` is not one of: mailplug/v1 (hint: did you mean `mailplug/v1`?)",
        "./types.yaml:1:1: error: /: missing required field `from`",
        "./types.yaml:3:7: error: /name: expected a string, found an integer",
        "./types.yaml:4:13: error: /workspaces: expected a list, found a string",
        "./types.yaml:5:28: error: /limits/timeout_seconds: expected an integer, found a string",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn extra_headers_may_not_replace_the_ones_mailplug_sets() {
    let doc = |headers: &str| format!("{}options:\n  headers:\n{headers}", connection("c1"));
    let dir = tree(&[
        ("ok.yaml", doc("    X-Campaign: spring\n").as_bytes()),
        (
            "bad.yaml",
            doc("    X-Campaign: spring\n    from: someone@else.example\n")
                .replace("name: c1", "name: c2")
                .as_bytes(),
        ),
    ]);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, CONFIG_ERROR, "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "./bad.yaml:16:11: error: /options/headers/from: the header `from` is one mailplug sets itself"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("./ok.yaml"), "{}", run.stdout);
}

#[test]
fn an_amazon_ses_connection_without_sns_topics_gets_a_warning() {
    let ses = |webhook: &str| {
        format!(
            "api_version: mailplug/v1\nkind: Connection\nname: ses\nprovider: amazon-ses\noptions: {{ region: us-east-1 }}\nsmtp:\n  username: AKIAIOSFODNN7EXAMPLE\n  password: {{ env: SES_SMTP_PASSWORD }}\nfrom:\n  email: news@example.com\n{webhook}"
        )
    };
    let without = ses("webhook:\n  sns:\n    auto_confirm: true\n");
    let dir = tree(&[("ses.yaml", without.as_bytes())]);
    let run = validate(dir.path(), &[]);
    assert_eq!(run.code, 0, "a warning alone passes: {}", run.stdout);
    assert!(
        run.stdout.contains(
            "./ses.yaml:12:3: warning: /webhook/sns/topics: no SNS topic is listed, so every SES event"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(
        validate(dir.path(), &["--deny-warnings"]).code,
        CONFIG_ERROR
    );
    // No webhook section at all: the same warning.
    let dir = tree(&[("ses.yaml", ses("").as_bytes())]);
    let run = validate(dir.path(), &[]);
    assert!(
        run.stdout
            .contains("warning: /webhook/sns/topics: no SNS topic is listed"),
        "{}",
        run.stdout
    );
    // A listed topic: nothing to warn about.
    let listed =
        ses("webhook:\n  sns:\n    topics: [\"arn:aws:sns:us-east-1:123456789012:ses-events\"]\n");
    let dir = tree(&[("ses.yaml", listed.as_bytes())]);
    let run = validate(dir.path(), &["--deny-warnings"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    // Other providers have no SNS.
    let dir = tree(&[("plain.yaml", connection("plain").as_bytes())]);
    assert_eq!(validate(dir.path(), &["--deny-warnings"]).code, 0);
}
