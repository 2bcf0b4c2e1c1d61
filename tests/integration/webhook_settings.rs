//! Settings around the webhook pipeline, applied on reload: a connection's
//! `webhook.tolerance` (what `clock.signature-tolerance` tells the plugin)
//! and `kind: Workspace` documents (a workspace's own soft-bounce rule next
//! to the daemon-wide default); their located validation errors.

use serde_json::Value;

use crate::support::{connection, run_in, tree};
use crate::webhooks::{SIGNED_AT, post_raw, start, suppressions, sw_event, sw_sign};

fn soft_bounce(d: &crate::daemon::Daemon, id: &str, recipient: &str) {
    let body = sw_event("bounced", recipient, "soft");
    let (status, _, json) = post_raw(
        &d.public,
        "/webhooks/sw",
        &sw_sign(id, SIGNED_AT, &body),
        &body,
    );
    assert_eq!(status, 200, "{json}");
}

fn workspaces_of(listed: &[Value]) -> Vec<String> {
    let mut w: Vec<String> = listed
        .iter()
        .map(|s| s["workspace"].as_str().unwrap_or_default().to_owned())
        .collect();
    w.sort();
    w
}

fn reload(d: &crate::daemon::Daemon, change: impl FnOnce()) {
    let generation = d.get_json("/v1/status").1["generation"].as_u64().unwrap();
    change();
    d.wait_for("/v1/status", "the change applied", |_, b| {
        b["generation"].as_u64() > Some(generation) && b["last_reload"]["result"] == "ok"
    });
}

#[test]
fn a_connection_sets_how_far_a_signed_timestamp_may_be_off() {
    // The daemon's clock is pinned 30 s after SIGNED_AT.
    let (_tmp, dir, d) = start(&[]);
    let post = |id: &str, at: i64| {
        let body = sw_event("delivered", &format!("{id}@example.net"), "");
        post_raw(&d.public, "/webhooks/sw", &sw_sign(id, at, &body), &body)
    };
    let (status, _, json) = post("default", SIGNED_AT);
    assert_eq!(status, 200, "30 s off is within the default 300 s: {json}");

    let sw = dir.join("sw.yaml");
    reload(&d, || {
        let mut text = std::fs::read_to_string(&sw).unwrap();
        text.push_str("  tolerance: 10s\n");
        std::fs::write(&sw, text).unwrap();
    });
    let (status, _, json) = post("stale", SIGNED_AT);
    assert_eq!(status, 401, "{json}");
    assert!(
        json["error"].as_str().unwrap_or("").contains("30 s off"),
        "{json}"
    );
    assert!(crate::webhooks::all_events(&d, "&recipient=stale@example.net").is_empty());
    let (status, _, json) = post("fresh", SIGNED_AT + 25);
    assert_eq!(status, 200, "5 s off is within 10 s: {json}");
}

#[test]
fn a_workspace_document_sets_its_own_soft_bounce_threshold_on_reload() {
    // `sw` serves marketing and product; the daemon default is 3 soft bounces.
    let (_tmp, dir, d) = start(&["--soft-bounce-threshold", "3"]);
    soft_bounce(&d, "before-1", "a@example.net");
    assert!(suppressions(&d, "address=a@example.net").is_empty());

    reload(&d, || {
        std::fs::write(
            dir.join("product.yaml"),
            "api_version: mailplug/v1\nkind: Workspace\nname: product\nsoft_bounces:\n  threshold: 1\n  window: 2days\n",
        )
        .unwrap();
    });

    soft_bounce(&d, "after-1", "b@example.net");
    let listed = suppressions(&d, "address=b@example.net");
    assert_eq!(workspaces_of(&listed), ["product"], "{listed:?}");
    assert_eq!(listed[0]["reason"], "soft_bounces");
    // marketing keeps the default: two more make three there.
    soft_bounce(&d, "after-2", "b@example.net");
    soft_bounce(&d, "after-3", "b@example.net");
    let listed = suppressions(&d, "address=b@example.net");
    assert_eq!(
        workspaces_of(&listed),
        ["marketing", "product"],
        "{listed:?}"
    );
}

#[test]
fn bad_workspace_documents_and_tolerances_are_located_errors() {
    let doc = |body: &str| format!("api_version: mailplug/v1\nkind: Workspace\n{body}");
    let files = [
        (
            "a.yaml",
            doc("name: a\nsoft_bounces:\n  threshold: 2\n  window: soon\n"),
        ),
        (
            "b.yaml",
            doc("name: b\nsoft_bounces:\n  threshold: 0\n  window: 1d\n"),
        ),
        (
            "c.yaml",
            doc("name: c\nsoft_bounces:\n  threshold: 2\n  window: 5s\n"),
        ),
        ("d.yaml", doc("name: d\nsoft_bounce: {}\n")),
        ("e.yaml", doc("name: -e\n")),
        ("f.yaml", doc("name: g\n")),
        ("g.yaml", doc("name: g\n")),
        (
            "conn.yaml",
            format!("{}webhook:\n  tolerance: 2h\n", connection("c1")),
        ),
    ];
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
    let t = tree(&files);
    let run = run_in(t.path(), &["validate", "."]);
    assert_eq!(run.code, 78, "{}{}", run.stdout, run.stderr);
    for expected in [
        "./a.yaml:6:11: error: /soft_bounces/window: `soon` is not a duration",
        "./b.yaml:5:14: error: /soft_bounces/threshold:",
        "./c.yaml:6:11: error: /soft_bounces/window: must be between 1m and 1year",
        "./d.yaml:4:1: error: /soft_bounce: unknown field",
        "./e.yaml:3:7: error: /name:",
        "./f.yaml:3:7: error: /name: duplicate workspace name `g`",
        "./conn.yaml:14:14: error: /webhook/tolerance: must be between 1s and 1h",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stdout
        );
    }
}
