//! The listeners under hostile clients, against the real binary on
//! 127.0.0.1:0: idle-socket floods, connection caps, cross-site and
//! rebinding requests to the token-less admin API, bearer parsing, blank
//! tokens at startup, denial metrics and JSON error bodies.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::Daemon;
use crate::support::{connection, mailplug};

fn config_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), connection("alpha")).unwrap();
    (tmp, dir)
}

/// `host:port` of a listener URL the daemon printed.
fn addr(url: &str) -> &str {
    url.strip_prefix("http://").unwrap()
}

/// Sends one raw HTTP/1.1 request (`Connection: close`) and returns the
/// status and the body parsed as JSON (`Value::Null` if it is not JSON).
fn exchange(addr: &str, request: &str) -> (u16, Value) {
    try_exchange(addr, request).unwrap()
}

/// [`exchange`], returning transport errors (a refused or reset connection).
fn try_exchange(addr: &str, request: &str) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!("no status line in {text:?}"),
            )
        })?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// A request with the given method, path, extra header lines and body.
fn request(method: &str, path: &str, host: &str, headers: &[&str], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

/// Waits (bounded) until the server has closed `stream`: end of file or a
/// reset, after at most a 503 answer. Panics if it is still open at `deadline`.
fn assert_closed_by_server(stream: &mut TcpStream, deadline: Instant) {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server kept the connection open");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                // At most one final answer (the 503 of a refused connection).
                assert!(
                    text.starts_with("HTTP/1.1 ") || text.contains("too many open connections"),
                    "unexpected bytes before the close: {text:?}"
                );
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return;
            }
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

/// Polls `series` on `/metrics` until `pred` holds (bounded), returning the value.
fn wait_metric(d: &Daemon, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = d.metric(series);
        if pred(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {value}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Raises this test process's open-file soft limit so it can hold `n` sockets.
fn allow_open_files(n: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|soft| soft < n) {
        assert!(
            limit.maximum.is_none_or(|hard| hard >= n),
            "the hard open-file limit {:?} is below the {n} this test needs",
            limit.maximum
        );
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .unwrap();
    }
}

#[test]
fn an_idle_socket_flood_on_the_public_port_neither_starves_the_admin_api_nor_stays_open() {
    const SOCKETS: usize = 5_000;
    allow_open_files(SOCKETS as u64 + 512);
    let (_tmp, dir) = config_dir();
    let d = Daemon::start(&dir, &["--header-read-timeout", "2s"]);
    let public: std::net::SocketAddr = addr(&d.public).parse().unwrap();

    let mut idle: Vec<TcpStream> = (0..SOCKETS)
        .map(|i| {
            TcpStream::connect_timeout(&public, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("connection {i} to the public port failed: {e}"))
        })
        .collect();

    // The admin listener has its own cap: it answers during the flood.
    let (status, body) = d.get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Every socket is closed by the server: the refused ones at once, the
    // served ones when their header-read timeout expires.
    let deadline = Instant::now() + Duration::from_secs(60);
    for stream in &mut idle {
        assert_closed_by_server(stream, deadline);
    }
    wait_metric(
        &d,
        "mailplug_http_open_connections{listener=\"public\"}",
        |v| v == 0.0,
    );
    // How many were over the cap depends on how fast they were opened
    // (served ones free their slot after 2 s); none was counted twice.
    let refused = d.metric("mailplug_http_connections_refused_total{listener=\"public\"}");
    assert!(refused <= SOCKETS as f64, "{refused}");
    let (status, _) = d.get("/healthz");
    assert_eq!(status, 200);
}

#[test]
fn connections_over_a_listeners_cap_are_refused_and_a_freed_slot_is_served_again() {
    let (_tmp, dir) = config_dir();
    let d = Daemon::start(
        &dir,
        &[
            "--max-connections-public",
            "3",
            "--max-connections-admin",
            "2",
            "--header-read-timeout",
            "5min",
        ],
    );
    let public = addr(&d.public).to_owned();
    let admin = addr(&d.admin).to_owned();

    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&public).unwrap())
        .collect();
    wait_metric(
        &d,
        "mailplug_http_open_connections{listener=\"public\"}",
        |v| v == 3.0,
    );
    let mut excess = TcpStream::connect(&public).unwrap();
    assert_closed_by_server(&mut excess, Instant::now() + Duration::from_secs(30));
    assert_eq!(
        d.metric("mailplug_http_connections_refused_total{listener=\"public\"}"),
        1.0
    );

    // A freed slot is served again.
    drop(held.pop());
    let webhook = request("POST", "/webhooks/nope", &public, &[], "");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream = TcpStream::connect(&public).unwrap();
        stream.write_all(webhook.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut answer = String::new();
        let read = stream.read_to_string(&mut answer);
        if read.is_ok() && answer.starts_with("HTTP/1.1 404") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no slot freed: {read:?} {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The admin listener has its own, separate cap. The helper's own
    // keep-alive connection may hold one of its two slots, so connections
    // are opened (and kept) until one is refused: the third at the latest.
    let mut admin_held = Vec::new();
    let mut refused_admin = None;
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut first = [0u8; 12];
        // A refused connection gets its 503 without sending a request; a
        // served one stays silent until the read times out.
        match stream.read(&mut first) {
            Ok(n) if n == 0 || first[..n].starts_with(b"HTTP/1.1 503") => {
                refused_admin = Some(stream);
                break;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                refused_admin = Some(stream);
                break;
            }
            _ => admin_held.push(stream),
        }
    }
    let mut refused_admin =
        refused_admin.expect("the admin cap of 2 refused none of 3 connections");
    assert_closed_by_server(&mut refused_admin, Instant::now() + Duration::from_secs(30));
    drop(admin_held);
    drop(held);
    // The freed admin slots are served again (once the server has seen the closes).
    let healthz = request("GET", "/healthz", &admin, &[], "");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = try_exchange(&admin, &healthz);
        if matches!(answer, Ok((200, _))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "admin slots not freed: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.metric("mailplug_http_connections_refused_total{listener=\"admin\"}") >= 1.0);
}

#[test]
fn cross_site_and_rebinding_requests_to_the_token_less_admin_api_are_refused() {
    let (_tmp, dir) = config_dir();
    let d = Daemon::start(&dir, &[]);
    let admin = addr(&d.admin).to_owned();
    let send = r#"{"to": "victim@example.com"}"#;

    // A form or no-CORS fetch from a web page can only send text/plain.
    let (status, body) = exchange(
        &admin,
        &request(
            "POST",
            "/v1/connections/alpha/test",
            &admin,
            &["Content-Type: text/plain", "Origin: https://evil.example"],
            send,
        ),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = exchange(
        &admin,
        &request(
            "POST",
            "/v1/connections/alpha/test",
            &admin,
            &["Content-Type: text/plain"],
            send,
        ),
    );
    assert_eq!(status, 415, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("application/json"),
        "{body}"
    );
    let (status, body) = exchange(
        &admin,
        &request(
            "POST",
            "/v1/connections/alpha/test",
            &admin,
            &["Content-Type: application/json", "Origin: null"],
            send,
        ),
    );
    assert_eq!(status, 403, "{body}");

    // DNS rebinding: the page's own host name, now pointing at 127.0.0.1.
    let (status, body) = exchange(
        &admin,
        &request("GET", "/v1/status", "evil.example:8025", &[], ""),
    );
    assert_eq!(status, 421, "{body}");
    assert!(body["error"].is_string(), "{body}");

    // Loopback names, a same-machine origin and a bodiless reload are served.
    let port = admin.rsplit(':').next().unwrap();
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        admin.clone(),
    ] {
        let (status, body) = exchange(&admin, &request("GET", "/v1/status", &host, &[], ""));
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body["fd_limit"]["soft"].is_u64(), "{body}");
    }
    let (status, body) = exchange(
        &admin,
        &request(
            "POST",
            "/v1/reload",
            &admin,
            &["Origin: http://localhost:3000"],
            "",
        ),
    );
    assert_eq!(status, 200, "{body}");

    let denied = |reason: &str| {
        d.metric(&format!(
            "mailplug_http_denied_total{{listener=\"admin\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(denied("origin"), 2.0);
    assert_eq!(denied("content_type"), 1.0);
    assert_eq!(denied("host"), 1.0);
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_refusals_are_counted() {
    let (_tmp, dir) = config_dir();
    let d = Daemon::start(&dir, &["--admin-token", "s3cr3t-token"]);
    let admin = addr(&d.admin).to_owned();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("Authorization: {scheme} s3cr3t-token");
        let (status, body) = exchange(&admin, &request("GET", "/v1/status", &admin, &[&auth], ""));
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    // With a token the Host is not restricted (the listener may be public).
    let (status, _) = exchange(
        &admin,
        &request(
            "GET",
            "/v1/status",
            "mailplug.internal",
            &["Authorization: bearer s3cr3t-token"],
            "",
        ),
    );
    assert_eq!(status, 200);
    for auth in [
        "Authorization: Bearer wrong",
        "Authorization: Basic s3cr3t-token",
    ] {
        let (status, body) = exchange(&admin, &request("GET", "/v1/status", &admin, &[auth], ""));
        assert_eq!(status, 401, "{auth}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (status, _) = exchange(&admin, &request("GET", "/metrics", &admin, &[], ""));
    assert_eq!(status, 401);
    assert_eq!(
        d.metric("mailplug_http_denied_total{listener=\"admin\",reason=\"token\"}"),
        3.0
    );
}

#[test]
fn a_blank_admin_token_is_a_usage_error_at_startup() {
    let (tmp, dir) = config_dir();
    for (flag, env) in [(Some("   "), None), (None, Some(" \t "))] {
        let mut command = mailplug();
        command
            .args(["serve", "--config"])
            .arg(&dir)
            .args([
                "--listen-admin",
                "127.0.0.1:0",
                "--listen-public",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(tmp.path().join("data"));
        if let Some(token) = flag {
            command.args(["--admin-token", token]);
        }
        if let Some(token) = env {
            command.env("MAILPLUG_ADMIN_TOKEN", token);
        }
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag:?} {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--admin-token"), "{stderr}");
    }
}

#[test]
fn error_responses_of_both_listeners_have_json_bodies() {
    let (_tmp, dir) = config_dir();
    let d = Daemon::start(&dir, &["--request-timeout", "1s"]);
    let admin = addr(&d.admin).to_owned();
    let public = addr(&d.public).to_owned();
    let cases = [
        (&admin, request("GET", "/nope", &admin, &[], ""), 404),
        (&admin, request("GET", "/v1/reload", &admin, &[], ""), 405),
        (
            &admin,
            request("DELETE", "/v1/status", &admin, &[], ""),
            405,
        ),
        (&public, request("GET", "/nope", &public, &[], ""), 404),
        (
            &public,
            request("GET", "/webhooks/alpha", &public, &[], ""),
            405,
        ),
        (
            &public,
            request("POST", "/webhooks/nope", &public, &[], ""),
            404,
        ),
        (
            &admin,
            request(
                "POST",
                "/v1/connections/alpha/test",
                &admin,
                &["Content-Type: application/json"],
                "{",
            ),
            400,
        ),
    ];
    for (to, text, expected) in cases {
        let (status, body) = exchange(to, &text);
        assert_eq!(status, expected, "{text}");
        assert!(body["error"].is_string(), "{text}: {body}");
    }

    // A body that never completes ends in the request timeout, as JSON.
    let stalled = format!(
        "POST /v1/connections/alpha/check HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"rcpt\""
    );
    let (status, body) = exchange(&admin, &stalled);
    assert_eq!(status, 408, "{body}");
    assert!(body["error"].as_str().unwrap().contains("1s"), "{body}");
}

#[test]
fn a_request_in_flight_at_sigterm_is_answered_before_the_daemon_exits() {
    // An SMTP server that accepts and never greets: the check stays in
    // flight until this test lets it go.
    let smtp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = smtp.local_addr().unwrap().port();
    let (_tmp, dir) = config_dir();
    std::fs::write(
        dir.join("b.yaml"),
        format!(
            "api_version: mailplug/v1\nkind: Connection\nname: stall\nsmtp: {{ host: 127.0.0.1, port: {port}, security: none }}\nfrom: {{ email: a@example.com }}\n"
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&dir, &[]);
    let admin = addr(&d.admin).to_owned();
    let check = request("POST", "/v1/connections/stall/check", &admin, &[], "");
    let client = {
        let admin = admin.clone();
        std::thread::spawn(move || exchange(&admin, &check))
    };
    let (held, _) = smtp.accept().unwrap();

    // Once the admin listener is closed the daemon is draining.
    d.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&admin).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the admin listener stayed open after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);

    let (status, body) = client.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["classification"].is_object(), "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
}
