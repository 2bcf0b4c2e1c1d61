//! `mailplug events` and `mailplug suppressions`: clients of a running
//! daemon's admin API (the store belongs to the daemon; these commands never
//! open it themselves).

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::Format;
use super::exit;
use crate::config::diagnostic::Escaped;

/// How to reach the daemon.
#[derive(Debug, clap::Args)]
pub struct Admin {
    /// Admin API base URL of the daemon.
    #[arg(
        long,
        env = "MAILPLUG_ADMIN_URL",
        default_value = "http://127.0.0.1:8025"
    )]
    pub(super) admin_url: String,
    /// Bearer token, when the daemon requires one.
    #[arg(long, env = "MAILPLUG_ADMIN_TOKEN", hide_env_values = true)]
    pub(super) admin_token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub(super) format: Format,
}

/// Filters shared by `events list` and `events tail`.
#[derive(Debug, clap::Args)]
pub struct EventFilters {
    /// Only this connection.
    #[arg(long)]
    connection: Option<String>,
    /// Only events of connections serving this workspace.
    #[arg(long)]
    workspace: Option<String>,
    /// Only this kind (delivered, deferred, bounced, complained, dropped, opened, clicked, unsubscribed).
    #[arg(long)]
    kind: Option<String>,
    /// Only this recipient (domain compared case-insensitively).
    #[arg(long)]
    recipient: Option<String>,
}

/// `mailplug events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EventsCommand {
    /// List stored events, newest first.
    List {
        #[command(flatten)]
        filters: EventFilters,
        /// `occurred_at` at or after (RFC 3339 or Unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// `occurred_at` before (RFC 3339 or Unix seconds).
        #[arg(long)]
        until: Option<String>,
        /// Most events to print (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue from the `next_cursor` a previous listing printed.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Print events as they are stored, until interrupted (`--format json`:
    /// one event per line).
    Tail {
        #[command(flatten)]
        filters: EventFilters,
        /// Also print the last N stored events first.
        #[arg(long, default_value_t = 0)]
        last: usize,
        /// How often to ask the daemon for new events, e.g. `500ms`.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        interval: Duration,
        #[command(flatten)]
        admin: Admin,
    },
}

/// `mailplug suppressions`.
#[derive(Debug, clap::Args)]
pub struct SuppressionsArgs {
    #[command(subcommand)]
    command: SuppressionsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SuppressionsCommand {
    /// List suppressed addresses.
    List {
        /// Only this workspace.
        #[arg(long)]
        workspace: Option<String>,
        /// Only this address.
        #[arg(long)]
        address: Option<String>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Suppress an address in a workspace.
    Add {
        /// Workspace.
        workspace: String,
        /// Address.
        address: String,
        /// Why (kept with the entry).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Remove a suppression; exit 1 when the address was not suppressed.
    Remove {
        /// Workspace.
        workspace: String,
        /// Address.
        address: String,
        #[command(flatten)]
        admin: Admin,
    },
}

pub(super) struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    pub(super) fn new(admin: &Admin) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            agent,
            base: admin.admin_url.trim_end_matches('/').to_owned(),
            token: admin.admin_token.clone().filter(|t| !t.trim().is_empty()),
        }
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// `(status, JSON body)`; a connection failure names the URL.
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.auth(self.agent.get(&url)).call(),
            ("DELETE", _) => self.auth(self.agent.delete(&url)).call(),
            (_, Some(b)) => self.auth(self.agent.post(&url)).send_json(b),
            (_, None) => self.auth(self.agent.post(&url)).send_empty(),
        };
        let mut response = response.with_context(|| {
            format!(
                "cannot reach the daemon at {} (is `mailplug serve` running? --admin-url)",
                self.base
            )
        })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

/// Query string from present parameters, percent-encoded.
fn query(params: &[(&str, Option<String>)]) -> String {
    let encoded: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|v| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
        })
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Prints the daemon's error and maps its status to an exit code.
pub(super) fn failed(command: &str, status: u16, body: &Value) -> u8 {
    let message = body["error"].as_str().unwrap_or("unexpected answer");
    eprintln!("mailplug {command}: {} ({status})", Escaped(message));
    match status {
        400 | 404 | 422 => exit::USAGE,
        401 | 403 | 421 => exit::UNAVAILABLE,
        _ => exit::TEMPFAIL,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => Escaped(s).to_string(),
        other => other.to_string(),
    }
}

fn print_event(e: &Value, format: Format) {
    match format {
        Format::Json => println!("{e}"),
        Format::Text => {
            let kind = match e["bounce_class"].as_str() {
                Some(class) => format!("{}/{class}", text(&e["kind"])),
                None => text(&e["kind"]),
            };
            let status = [&e["smtp_status"], &e["enhanced_status"]]
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "{}  {}  {:<16} {:<14} {}{}",
                text(&e["occurred_at"]),
                text(&e["id"]),
                text(&e["connection"]),
                kind,
                text(&e["recipient"]),
                if status.is_empty() {
                    String::new()
                } else {
                    format!("  {status}")
                }
            );
        }
    }
}

/// An unreachable daemon is a temporary failure (exit 75), not a bug.
pub(super) fn unreachable_is_tempfail(
    command: &str,
    result: anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    result.or_else(|e| {
        eprintln!("mailplug {command}: {e:#}");
        Ok(exit::TEMPFAIL)
    })
}

/// Runs `mailplug events`.
pub fn run_events(args: EventsArgs) -> anyhow::Result<u8> {
    unreachable_is_tempfail("events", events(args))
}

/// Runs `mailplug suppressions`.
pub fn run_suppressions(args: SuppressionsArgs) -> anyhow::Result<u8> {
    unreachable_is_tempfail("suppressions", suppressions(args))
}

fn events(args: EventsArgs) -> anyhow::Result<u8> {
    match args.command {
        EventsCommand::List {
            filters,
            since,
            until,
            limit,
            cursor,
            admin,
        } => {
            let client = Client::new(&admin);
            let path = format!(
                "/v1/events{}",
                query(&[
                    ("connection", filters.connection),
                    ("workspace", filters.workspace),
                    ("kind", filters.kind),
                    ("recipient", filters.recipient),
                    ("since", since),
                    ("until", until),
                    ("limit", Some(limit.to_string())),
                    ("cursor", cursor),
                ])
            );
            let (status, body) = client.call("GET", &path, None)?;
            if status != 200 {
                return Ok(failed("events list", status, &body));
            }
            match admin.format {
                Format::Json => println!("{body}"),
                Format::Text => {
                    let events = body["events"].as_array().cloned().unwrap_or_default();
                    if events.is_empty() {
                        println!("no events");
                    }
                    for e in &events {
                        print_event(e, Format::Text);
                    }
                    if let Some(next) = body["next_cursor"].as_str() {
                        println!("more: --cursor {next}");
                    }
                }
            }
            Ok(exit::OK)
        }
        EventsCommand::Tail {
            filters,
            last,
            interval,
            admin,
        } => tail(&filters, last, interval, &admin),
    }
}

fn tail(
    filters: &EventFilters,
    last: usize,
    interval: Duration,
    admin: &Admin,
) -> anyhow::Result<u8> {
    let client = Client::new(admin);
    let base = [
        ("connection", filters.connection.clone()),
        ("workspace", filters.workspace.clone()),
        ("kind", filters.kind.clone()),
        ("recipient", filters.recipient.clone()),
    ];
    // Where to start: the newest stored event (printing the last N first).
    let mut params = base.to_vec();
    params.push(("limit", Some(last.clamp(1, 1000).to_string())));
    let (status, body) = client.call("GET", &format!("/v1/events{}", query(&params)), None)?;
    if status != 200 {
        return Ok(failed("events tail", status, &body));
    }
    let newest = body["events"].as_array().cloned().unwrap_or_default();
    let mut after = newest
        .first()
        .and_then(|e| e["id"].as_str())
        .map(str::to_owned);
    if last > 0 {
        for e in newest.iter().rev() {
            print_event(e, admin.format);
        }
    }
    if admin.format == Format::Text {
        eprintln!("following new events (Ctrl-C to stop)");
    }
    let mut failures = 0u32;
    loop {
        let mut params = base.to_vec();
        params.push(("order", Some("asc".into())));
        params.push(("limit", Some("1000".into())));
        params.push(("after", after.clone()));
        match client.call("GET", &format!("/v1/events{}", query(&params)), None) {
            Ok((200, body)) => {
                failures = 0;
                let events = body["events"].as_array().cloned().unwrap_or_default();
                for e in &events {
                    print_event(e, admin.format);
                }
                if let Some(id) = events.last().and_then(|e| e["id"].as_str()) {
                    after = Some(id.to_owned());
                }
                if body["next_cursor"].is_string() {
                    continue; // more waiting: no pause
                }
            }
            Ok((status, body)) => return Ok(failed("events tail", status, &body)),
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    eprintln!("mailplug events tail: {e:#}; retrying");
                }
            }
        }
        std::io::Write::flush(&mut std::io::stdout()).ok();
        std::thread::sleep(interval);
    }
}

fn suppressions(args: SuppressionsArgs) -> anyhow::Result<u8> {
    match args.command {
        SuppressionsCommand::List {
            workspace,
            address,
            admin,
        } => {
            let client = Client::new(&admin);
            let mut cursor = None;
            let mut all = Vec::new();
            loop {
                let path = format!(
                    "/v1/suppressions{}",
                    query(&[
                        ("workspace", workspace.clone()),
                        ("address", address.clone()),
                        ("limit", Some("1000".into())),
                        ("cursor", cursor.clone()),
                    ])
                );
                let (status, body) = client.call("GET", &path, None)?;
                if status != 200 {
                    return Ok(failed("suppressions list", status, &body));
                }
                all.extend(body["suppressions"].as_array().cloned().unwrap_or_default());
                match body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            match admin.format {
                Format::Json => println!("{}", json!({ "suppressions": all })),
                Format::Text => {
                    if all.is_empty() {
                        println!("no suppressions");
                    }
                    for s in &all {
                        println!(
                            "{:<16} {:<40} {:<13} {}{}",
                            text(&s["workspace"]),
                            text(&s["address"]),
                            text(&s["reason"]),
                            text(&s["created_at"]),
                            s["note"]
                                .as_str()
                                .map(|n| format!("  ({})", Escaped(n)))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            Ok(exit::OK)
        }
        SuppressionsCommand::Add {
            workspace,
            address,
            note,
            admin,
        } => {
            let client = Client::new(&admin);
            let body = json!({ "workspace": workspace, "address": address, "note": note });
            let (status, reply) = client.call("POST", "/v1/suppressions", Some(&body))?;
            match status {
                201 | 200 => {
                    match admin.format {
                        Format::Json => println!("{reply}"),
                        Format::Text if status == 201 => {
                            println!(
                                "suppressed {} in {}",
                                Escaped(&address),
                                Escaped(&workspace)
                            );
                        }
                        Format::Text => println!(
                            "{} was already suppressed in {}",
                            Escaped(&address),
                            Escaped(&workspace)
                        ),
                    }
                    Ok(exit::OK)
                }
                _ => Ok(failed("suppressions add", status, &reply)),
            }
        }
        SuppressionsCommand::Remove {
            workspace,
            address,
            admin,
        } => {
            let client = Client::new(&admin);
            let path = format!(
                "/v1/suppressions/{}/{}",
                segment(&workspace),
                segment(&address)
            );
            let (status, reply) = client.call("DELETE", &path, None)?;
            match status {
                204 => {
                    if admin.format == Format::Text {
                        println!("removed {} from {}", Escaped(&address), Escaped(&workspace));
                    }
                    Ok(exit::OK)
                }
                404 => {
                    eprintln!(
                        "mailplug suppressions remove: {} is not suppressed in {}",
                        Escaped(&address),
                        Escaped(&workspace)
                    );
                    Ok(1)
                }
                _ => Ok(failed("suppressions remove", status, &reply)),
            }
        }
    }
}
