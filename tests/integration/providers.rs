//! Provider plugins seen from the configuration: `validate` checks provider
//! ids and options against the plugin's own schema, `kind: Plugin`
//! registrations are pinned by sha256, and the daemon swaps registered
//! plugins atomically (keeping the old ones when a new registration fails).

use std::path::Path;

use crate::daemon::Daemon;
use crate::plugins::guest;
use crate::support::{run_in, tree};

fn sha256(path: &Path) -> String {
    mailplug::digest::sha256_hex(&std::fs::read(path).unwrap())
}

fn registration(wasm: &Path, sha: &str) -> String {
    format!(
        "api_version: mailplug/v1\nkind: Plugin\nid: example\npath: {}\nsha256: {sha}\nlimits: {{ memory_mib: 16, deadline_ms: 200 }}\n",
        wasm.display()
    )
}

fn example_connection(options: &str) -> String {
    format!(
        "api_version: mailplug/v1\nkind: Connection\nname: ex\nprovider: example\nsmtp: {{ password: {{ env: EX_KEY }} }}\nfrom: {{ email: a@example.com }}\noptions: {options}\n"
    )
}

#[test]
fn unknown_provider_gets_a_did_you_mean_hint() {
    let dir = tree(&[("a.yaml", b"api_version: mailplug/v1\nkind: Connection\nname: a\nprovider: custom-smpt\nsmtp: { host: h }\nfrom: { email: a@example.com }\n")]);
    let run = run_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 78);
    assert!(
        run.stdout.contains("./a.yaml:4:11: error: /provider: unknown provider `custom-smpt` (hint: did you mean `custom-smtp`?)"),
        "{}",
        run.stdout
    );
}

#[test]
fn options_are_checked_against_the_plugin_schema() {
    let dir = tree(&[("a.yaml", b"api_version: mailplug/v1\nkind: Connection\nname: a\nsmtp: { host: h }\nfrom: { email: a@example.com }\noptions:\n  hedaers: {}\n")]);
    let run = run_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 78);
    assert!(
        run.stdout.contains("./a.yaml:7:3: error: /options/hedaers: unknown field `hedaers` (hint: did you mean `headers`?)"),
        "{}",
        run.stdout
    );
}

#[test]
fn registered_community_plugin_is_used_and_its_pin_enforced() {
    let wasm = guest("example_provider");
    let good = registration(&wasm, &sha256(&wasm));
    let dir = tree(&[
        ("plugins.yaml", good.as_bytes()),
        ("ex.yaml", example_connection("{ region: mars }").as_bytes()),
    ]);
    let run = run_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 78, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("./ex.yaml:7:20: error: /options/region: `mars` is not one of: eu, us"),
        "{}",
        run.stdout
    );
    std::fs::write(
        dir.path().join("ex.yaml"),
        example_connection("{ region: us }"),
    )
    .unwrap();
    let run = run_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 0, "{}", run.stdout);

    let wrong = registration(&wasm, &"ab".repeat(32));
    std::fs::write(dir.path().join("plugins.yaml"), wrong).unwrap();
    let run = run_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 78);
    assert!(
        run.stdout.contains("./plugins.yaml:5:9: error: /sha256:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("not the pinned value"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("./ex.yaml:4:11: error: /provider: unknown provider `example`"),
        "{}",
        run.stdout
    );
}

#[test]
fn daemon_keeps_the_old_plugin_when_a_new_registration_fails() {
    let wasm = guest("example_provider");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    let copy = tmp.path().join("example.wasm");
    std::fs::copy(&wasm, &copy).unwrap();
    std::fs::write(
        dir.join("plugins.yaml"),
        registration(&copy, &sha256(&copy)),
    )
    .unwrap();
    std::fs::write(dir.join("ex.yaml"), example_connection("{ region: us }")).unwrap();
    let d = Daemon::start(&dir, &[]);
    let status = d.get_json("/v1/status").1;
    assert_eq!(
        status["plugins"],
        serde_json::json!(["example"]),
        "{status}"
    );
    assert_eq!(d.get("/v1/connections/ex").0, 200);
    assert!(d.metric("mailplug_plugin_calls_total{plugin=\"example\",export=\"describe\"}") >= 1.0);
    // The registry's and the plugins' families form one OpenMetrics document.
    let text = d.get("/metrics").1;
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE mailplug_config_generation gauge\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "mailplug_plugin_call_seconds_bucket{le=\"+Inf\",plugin=\"example\",export=\"describe\"} "
        ),
        "{text}"
    );

    // A changed registration that loads is swapped in (result `ok`: no
    // registration problem kept the old catalog).
    let generation = status["generation"].as_u64().unwrap();
    let changed = registration(&copy, &sha256(&copy)).replace("memory_mib: 16", "memory_mib: 24");
    std::fs::write(dir.join("plugins.yaml"), changed).unwrap();
    d.wait_for("/v1/status", "plugin swap", |_, b| {
        b["generation"].as_u64().unwrap_or(0) > generation && b["last_reload"]["result"] == "ok"
    });

    // The wasm is replaced by something else: its pin no longer matches.
    std::fs::write(&copy, b"not a component").unwrap();
    std::fs::write(
        dir.join("plugins.yaml"),
        registration(&copy, &"cd".repeat(32)),
    )
    .unwrap();
    let status = d.wait_for("/v1/status", "failed plugin reload", |_, b| {
        b["last_reload"]["result"] == "partial"
    });
    let errors = status["errors"].to_string();
    assert!(errors.contains("plugins.yaml"), "{errors}");
    // The connection still works with the previously loaded plugin.
    assert_eq!(d.get("/v1/connections/ex").0, 200);
    let metrics = d.get("/metrics").1;
    assert!(
        metrics.contains("mailplug_plugin_calls_total{plugin=\"example\""),
        "old plugin still serving"
    );
}
