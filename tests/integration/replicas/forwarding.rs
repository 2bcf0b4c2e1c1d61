//! Forwarding with two replicas on one PostgreSQL: the outbox is shared,
//! so every stored event reaches each forwarder's receiver once, whichever
//! replica stored it and whichever claimed it.

use std::collections::HashSet;
use std::time::Duration;

use super::{configs, pg, webhook_connection};
use crate::daemon::Daemon;
use crate::forwarding::receiver::Receiver;
use crate::forwarding::{FWD_SECRET, forwarder};
use crate::webhooks::{NOW, SIGNED_AT, post_raw, sw_event, sw_sign};

fn replica(dir: &std::path::Path, url: &str) -> Daemon {
    Daemon::start_env(
        dir,
        &[],
        &[
            ("MAILPLUG_STORE_URL", url),
            ("MAILPLUG_FIXED_NOW", NOW),
            ("SMTP_PASSWORD", "pw"),
            ("FWD_SECRET", FWD_SECRET),
        ],
    )
}

#[test]
fn each_event_is_forwarded_once_per_forwarder_across_both_replicas() {
    let Some(pg) = pg::start() else { return };
    let url = pg.database("forwarding");
    let receiver = Receiver::start(0);
    let forwarders = [
        forwarder("app", "acme", &receiver.url("/app"), ""),
        forwarder("audit", "acme", &receiver.url("/audit"), ""),
    ]
    .concat();
    let (_tmp, [a_dir, b_dir]) = configs(&[
        ("sw.yaml", webhook_connection()),
        ("forwarders.yaml", forwarders),
    ]);
    let (a, b) = (replica(&a_dir, &url), replica(&b_dir, &url));
    // Forty events, alternately posted to each replica (as a load balancer
    // spreads them); each replica's forwarders claim from the shared outbox.
    let mut ids = HashSet::new();
    for i in 0..40 {
        let d = if i % 2 == 0 { &a } else { &b };
        let body = sw_event("bounced", &format!("fw{i}@example.org"), "hard");
        let headers = sw_sign(&format!("fwd_{i}"), SIGNED_AT, &body);
        let (status, _, json) = post_raw(&d.public, "/webhooks/sw", &headers, &body);
        assert_eq!(status, 200, "{json}");
        ids.insert(format!("fw{i}@example.org"));
    }
    for path in ["/app", "/audit"] {
        receiver.wait_for(&format!("forty events at {path}"), |h| {
            h.iter()
                .filter(|h| h.path == path && h.status == 200)
                .count()
                >= 40
        });
    }
    // Time for a second delivery of anything, had both replicas claimed it.
    std::thread::sleep(Duration::from_secs(2));
    for path in ["/app", "/audit"] {
        let delivered = receiver.delivered(path);
        let recipients: Vec<&str> = delivered
            .iter()
            .map(|h| h.body["recipient"].as_str().unwrap())
            .collect();
        assert_eq!(recipients.len(), 40, "{path}: duplicates in {recipients:?}");
        assert_eq!(
            recipients
                .iter()
                .map(|r| (*r).to_owned())
                .collect::<HashSet<_>>(),
            ids,
            "{path}"
        );
        assert!(
            delivered.iter().all(|h| h.signature_ok),
            "{path}: a bad signature"
        );
    }
    // Both replicas report the same outbox: nothing pending for either.
    for d in [&a, &b] {
        let (status, body) = d.get_json("/v1/forwarders");
        assert_eq!(status, 200, "{body}");
        for f in body["forwarders"].as_array().unwrap() {
            assert_eq!(f["pending"], 0, "{body}");
        }
    }
}
