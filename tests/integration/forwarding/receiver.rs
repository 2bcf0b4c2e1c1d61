//! A minimal HTTP/1.1 receiver on 127.0.0.1 that checks every Standard
//! Webhooks signature itself (its own HMAC, not the daemon's code) and
//! records what it got.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::key;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub id: String,
    pub content_type: String,
    pub signature_ok: bool,
    pub body: Value,
    /// What the receiver answered.
    pub status: u16,
}

/// A minimal HTTP/1.1 receiver: one request per connection, answered with
/// `status` (or 500 on the first attempt of an event of kind `flaky`).
pub struct Receiver {
    pub port: u16,
    pub status: Arc<AtomicU16>,
    pub flaky: Arc<Mutex<Option<String>>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(200));
        let flaky: Arc<Mutex<Option<String>>> = Arc::default();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (status, flaky, hits, stop) =
                (status.clone(), flaky.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &status, &flaky, &hits),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Receiver {
            port,
            status,
            flaky,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Accepted (2xx) requests to `path`.
    pub fn delivered(&self, path: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.path == path && h.status == 200)
            .collect()
    }

    pub fn wait_for(&self, what: &str, pred: impl Fn(&[Hit]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pred(&self.hits()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {} requests",
                self.hits().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    status: &AtomicU16,
    flaky: &Mutex<Option<String>>,
    hits: &Mutex<Vec<Hit>>,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
    let id = header("webhook-id");
    // Verified here, independently of the daemon's code.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key()).unwrap();
    mac.update(format!("{id}.{}.", header("webhook-timestamp")).as_bytes());
    mac.update(&body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let fresh = header("webhook-timestamp")
        .parse::<u64>()
        .ok()
        .zip(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok(),
        )
        .is_some_and(|(ts, now)| ts.abs_diff(now.as_secs()) <= 300);
    let signature_ok = fresh
        && header("webhook-signature")
            .split(' ')
            .any(|s| s == expected);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut hits = hits.lock().unwrap();
    let first_try = !hits.iter().any(|h| h.id == id);
    let flaky_kind = flaky.lock().unwrap().clone();
    let answer = if first_try && flaky_kind.is_some_and(|k| body["kind"] == k.as_str()) {
        500
    } else {
        status.load(Ordering::Relaxed)
    };
    hits.push(Hit {
        path,
        id,
        content_type: header("content-type"),
        signature_ok,
        body,
        status: answer,
    });
    drop(hits);
    let reason = if answer == 200 { "OK" } else { "Nope" };
    let mut stream = stream;
    let _ = stream.write_all(
        format!("HTTP/1.1 {answer} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    );
}
