//! `mailplug send`: the command-line form of `POST /v1/messages`, a client
//! of a running daemon (which owns the queue). Prints the message id, or
//! with `--wait` follows the message until no recipient is pending and
//! prints each recipient's outcome.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};

use super::Format;
use super::exit;
use super::store::{Admin, Client, failed, unreachable_is_tempfail};
use crate::config::diagnostic::Escaped;

/// `mailplug send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workspace it is sent for (its connections in priority order).
    #[arg(long, required_unless_present = "connection")]
    workspace: Option<String>,
    /// Send through this connection only (no failover).
    #[arg(long)]
    connection: Option<String>,
    /// From address (default: the connection's `from`).
    #[arg(long)]
    from: Option<String>,
    /// Recipient (repeatable).
    #[arg(long, required_unless_present_any = ["cc", "bcc"])]
    to: Vec<String>,
    /// Copy recipient (repeatable).
    #[arg(long)]
    cc: Vec<String>,
    /// Blind-copy recipient (repeatable).
    #[arg(long)]
    bcc: Vec<String>,
    /// Reply-To address.
    #[arg(long)]
    reply_to: Option<String>,
    /// Subject.
    #[arg(long)]
    subject: String,
    /// Plain-text body.
    #[arg(long, conflicts_with = "text_file")]
    text: Option<String>,
    /// Plain-text body read from a file.
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// HTML body read from a file.
    #[arg(long)]
    html_file: Option<PathBuf>,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// File to attach (repeatable; type application/octet-stream unless
    /// written `FILE;type=TYPE`).
    #[arg(long = "attach")]
    attachments: Vec<String>,
    /// Idempotency key: sending again with it queues nothing.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait (up to this long) until no recipient is pending, then print each outcome.
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
    #[command(flatten)]
    admin: Admin,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn body(args: &Args) -> anyhow::Result<Value> {
    let text = match (&args.text, &args.text_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(String::from_utf8_lossy(&read(f)?).into_owned()),
        (None, None) => None,
    };
    let html = match &args.html_file {
        Some(f) => Some(String::from_utf8_lossy(&read(f)?).into_owned()),
        None => None,
    };
    let mut headers = serde_json::Map::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?} is not `Name: value`"))?;
        headers.insert(
            name.trim().to_owned(),
            Value::String(value.trim().to_owned()),
        );
    }
    let mut attachments = Vec::new();
    for a in &args.attachments {
        let (file, content_type) = match a.split_once(";type=") {
            Some((f, t)) => (f, Some(t)),
            None => (a.as_str(), None),
        };
        let path = PathBuf::from(file);
        let bytes = read(&path)?;
        let filename = path
            .file_name()
            .map_or_else(|| file.to_owned(), |n| n.to_string_lossy().into_owned());
        attachments.push(json!({
            "filename": filename,
            "content_type": content_type,
            "content": base64::engine::general_purpose::STANDARD.encode(bytes),
        }));
    }
    let mut body = json!({
        "workspace": args.workspace,
        "connection": args.connection,
        "to": args.to, "cc": args.cc, "bcc": args.bcc,
        "reply_to": args.reply_to,
        "subject": args.subject,
        "text": text, "html": html,
        "headers": headers,
        "attachments": attachments,
        "idempotency_key": args.idempotency_key,
    });
    if let Some(from) = &args.from {
        body["from"] = json!(from);
    }
    // Absent rather than null, so the daemon's defaults apply.
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    Ok(body)
}

/// Runs `mailplug send`. Exit 0 when queued (with `--wait`: when every
/// recipient was sent), 2 when the daemon refused the message, 69 when a
/// recipient failed, 75 when the daemon is unreachable or the wait ran out.
pub fn run(args: Args) -> anyhow::Result<u8> {
    unreachable_is_tempfail("send", send(&args))
}

fn send(args: &Args) -> anyhow::Result<u8> {
    let client = Client::new(&args.admin);
    let request = match body(args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mailplug send: {e:#}");
            return Ok(exit::USAGE);
        }
    };
    let (status, answer) = client.call("POST", "/v1/messages", Some(&request))?;
    if status != 202 {
        for e in answer["errors"].as_array().into_iter().flatten() {
            eprintln!(
                "  {}: {}",
                Escaped(e["field"].as_str().unwrap_or("")),
                Escaped(e["message"].as_str().unwrap_or(""))
            );
        }
        return Ok(failed("send", status, &answer));
    }
    let id = answer["id"].as_str().unwrap_or_default().to_owned();
    let Some(wait) = args.wait else {
        match args.admin.format {
            Format::Json => println!("{answer}"),
            Format::Text => {
                let note = if answer["duplicate"] == true {
                    " (idempotency key seen before: nothing new queued)"
                } else {
                    ""
                };
                println!("queued {id}{note}");
            }
        }
        return Ok(exit::OK);
    };
    let deadline = Instant::now() + wait;
    loop {
        let (status, message) = client.call("GET", &format!("/v1/messages/{id}"), None)?;
        if status != 200 {
            return Ok(failed("send", status, &message));
        }
        let pending = message["status"] == "pending";
        if !pending || Instant::now() >= deadline {
            match args.admin.format {
                Format::Json => println!("{message}"),
                Format::Text => {
                    println!(
                        "message {id}: {}",
                        Escaped(message["status"].as_str().unwrap_or("?"))
                    );
                    for r in message["recipients"].as_array().into_iter().flatten() {
                        let result = &r["last_result"];
                        println!(
                            "  {} {} via {}{}{}",
                            Escaped(r["address"].as_str().unwrap_or("")),
                            Escaped(r["status"].as_str().unwrap_or("")),
                            Escaped(r["connection"].as_str().unwrap_or("")),
                            result["class"]
                                .as_str()
                                .map(|c| format!(": {c}"))
                                .unwrap_or_default(),
                            result["hint"]
                                .as_str()
                                .map(|h| format!(" ({})", Escaped(h)))
                                .unwrap_or_default(),
                        );
                    }
                }
            }
            return Ok(match message["status"].as_str() {
                Some("sent") => exit::OK,
                Some("pending") => {
                    eprintln!(
                        "mailplug send: still pending after {}",
                        humantime::format_duration(wait)
                    );
                    exit::TEMPFAIL
                }
                _ => exit::UNAVAILABLE,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
