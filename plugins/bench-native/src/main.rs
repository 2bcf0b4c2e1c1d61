//! Native baseline of `host/benches/providers.rs`: each first-party
//! plugin's own `parse-webhook` code, compiled for the host CPU instead of
//! wasm and called directly (no sandbox, no host checks of the output).
//!
//! The plugins' sources are compiled in as modules rather than linked as
//! crates: a plugin crate is a `cdylib` only (an `rlib` crate type beside
//! it costs ~20 % of component size under LTO), and off wasm the SDK's
//! `export!` exports nothing, so their code is plain Rust here.
//!
//! `bench-native MILLIS ID=BODY[=HEADERS_JSON]...` times each request for
//! about MILLIS ms and prints `ID NANOS_PER_CALL EVENTS` per line.

#[path = "../../amazon-ses/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod amazon_ses;
#[path = "../../brevo/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod brevo;
#[path = "../../custom-smtp/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod custom_smtp;
#[path = "../../mailgun/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod mailgun;
#[path = "../../mailjet/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod mailjet;
#[path = "../../mandrill/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod mandrill;
#[path = "../../postal/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod postal;
#[path = "../../postmark/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod postmark;
#[path = "../../resend/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod resend;
#[path = "../../sendgrid/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod sendgrid;
#[path = "../../sparkpost/src/lib.rs"]
#[allow(dead_code, reason = "only parse-webhook is timed")]
mod sparkpost;

use std::hint::black_box;
use std::time::{Duration, Instant};

use mailplug_sdk::Plugin;
use mailplug_sdk::types::{DeliveryEvent, ParseError, WebhookRequest};

type Parse = fn(&WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError>;

/// The parse function of a first-party plugin.
fn parser(id: &str) -> Option<Parse> {
    Some(match id {
        "custom-smtp" => <custom_smtp::CustomSmtp as Plugin>::parse_webhook,
        "sendgrid" => <sendgrid::SendGrid as Plugin>::parse_webhook,
        "postmark" => <postmark::Postmark as Plugin>::parse_webhook,
        "resend" => <resend::Resend as Plugin>::parse_webhook,
        "mailgun" => <mailgun::Mailgun as Plugin>::parse_webhook,
        "mailjet" => <mailjet::Mailjet as Plugin>::parse_webhook,
        "postal" => <postal::Postal as Plugin>::parse_webhook,
        "sparkpost" => <sparkpost::SparkPost as Plugin>::parse_webhook,
        "brevo" => <brevo::Brevo as Plugin>::parse_webhook,
        "mandrill" => <mandrill::Mandrill as Plugin>::parse_webhook,
        "amazon-ses" => <amazon_ses::AmazonSes as Plugin>::parse_webhook,
        _ => return None,
    })
}

fn request(body: &str, headers: Option<&str>) -> Result<WebhookRequest, String> {
    let body = std::fs::read(body).map_err(|e| format!("{body}: {e}"))?;
    let headers = match headers {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&text).map_err(|e| format!("{path}: {e}"))?;
            map.into_iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        }
    };
    Ok(WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        headers,
        body,
    })
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let millis: u64 = args
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or("usage: bench-native MILLIS ID=BODY[=HEADERS_JSON]...")?;
    for spec in args {
        let mut parts = spec.splitn(3, '=');
        let (Some(id), Some(body)) = (parts.next(), parts.next()) else {
            return Err(format!("{spec:?} is not ID=BODY[=HEADERS_JSON]"));
        };
        let parse = parser(id).ok_or_else(|| format!("no native build of plugin {id:?}"))?;
        let request = request(body, parts.next())?;
        let events = parse(&request)
            .map_err(|e| format!("{id}: {body} does not parse: {e:?}"))?
            .len();
        let budget = Duration::from_millis(millis);
        let start = Instant::now();
        let mut calls: u64 = 0;
        while start.elapsed() < budget {
            for _ in 0..16 {
                let _ = black_box(parse(black_box(&request)));
            }
            calls += 16;
        }
        let nanos = start.elapsed().as_nanos() / u128::from(calls);
        println!("{id} {nanos} {events}");
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-native: {e}");
        std::process::exit(2);
    }
}
