//! `mailplug serve` end to end on 127.0.0.1:0: every reload path (edit, add,
//! delete, rename, invalid edit, bulk change, ConfigMap symlink swap, SIGHUP,
//! API), admin auth, strict startup and graceful shutdown.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{connection, mailplug};

/// A running daemon; killed on drop if the test did not stop it.
pub struct Daemon {
    pub child: Child,
    pub admin: String,
    pub public: String,
    pub token: Option<String>,
    agent: ureq::Agent,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `mailplug serve` on `dir` with extra flags and waits for its ready line.
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Self::start_env(dir, extra, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let data = dir.parent().unwrap().join(format!(
            "data-{}",
            dir.file_name().unwrap().to_string_lossy()
        ));
        let mut child = mailplug()
            .args(["serve", "--config"])
            .arg(dir)
            .args([
                "--listen-admin",
                "127.0.0.1:0",
                "--listen-public",
                "127.0.0.1:0",
            ])
            .args(if extra.contains(&"--debounce-ms") {
                &[][..]
            } else {
                &["--debounce-ms", "100"][..]
            })
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .env("MAILPLUG_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mailplug serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let ready = line
            .trim()
            .strip_prefix("mailplug ready ")
            .unwrap_or_else(|| panic!("no ready line: {line:?}"));
        let mut admin = String::new();
        let mut public = String::new();
        for part in ready.split(' ') {
            if let Some(a) = part.strip_prefix("admin=") {
                admin = a.to_owned();
            } else if let Some(p) = part.strip_prefix("public=") {
                public = p.to_owned();
            }
        }
        let token = extra
            .iter()
            .position(|a| *a == "--admin-token")
            .map(|i| extra[i + 1].to_owned());
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Daemon {
            child,
            admin,
            public,
            token,
            agent,
        }
    }

    /// GET an admin path; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut req = self.agent.get(format!("{}{path}", self.admin));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.call().expect("GET");
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }

    /// GET an admin path, parsing JSON.
    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// POST an admin path (empty body); returns (status, JSON body).
    pub fn post(&self, path: &str) -> (u16, Value) {
        self.post_body(path, "")
    }

    /// POST an admin path with a JSON body; returns (status, JSON body).
    pub fn post_body(&self, path: &str, body: &str) -> (u16, Value) {
        let mut req = self.agent.post(format!("{}{path}", self.admin));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req
            .content_type("application/json")
            .send(body)
            .expect("POST");
        let body = resp.body_mut().read_to_string().unwrap();
        (
            resp.status().as_u16(),
            serde_json::from_str(&body).unwrap_or(Value::Null),
        )
    }

    /// Polls `path` until `pred` holds on its JSON (or 10 s pass).
    pub fn wait_for(&self, path: &str, what: &str, pred: impl Fn(u16, &Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.get_json(path);
            if pred(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Metric value by exact series text (`name{labels}`), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

fn with_host(name: &str, host: &str) -> String {
    connection(name).replace("smtp.example.com", host)
}

fn host_of(body: &Value) -> Option<&str> {
    body["smtp"]["host"].as_str()
}

fn config_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    (tmp, dir)
}

#[test]
fn edits_adds_deletes_and_renames_are_picked_up() {
    let (_tmp, dir) = config_dir();
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "one.example.com")).unwrap();
    let d = Daemon::start(&dir, &[]);
    let (status, body) = d.get_json("/v1/connections/alpha");
    assert_eq!(status, 200);
    assert_eq!(host_of(&body), Some("one.example.com"));
    assert_eq!(body["smtp"]["password"], "<redacted: env:SMTP_PASSWORD>");

    // Edit through an editor-style atomic save: write a temp file, rename over.
    std::fs::write(
        dir.join(".a.yaml.tmp"),
        with_host("alpha", "two.example.com"),
    )
    .unwrap();
    std::fs::rename(dir.join(".a.yaml.tmp"), dir.join("a.yaml")).unwrap();
    d.wait_for("/v1/connections/alpha", "edit", |_, b| {
        host_of(b) == Some("two.example.com")
    });

    // Add.
    std::fs::write(dir.join("b.yaml"), with_host("beta", "b.example.com")).unwrap();
    d.wait_for("/v1/connections/beta", "add", |s, _| s == 200);

    // Rename a file: same connection, new source.
    std::fs::rename(dir.join("b.yaml"), dir.join("renamed.yaml")).unwrap();
    d.wait_for("/v1/connections/beta", "rename", |s, b| {
        s == 200
            && b["source"]
                .as_str()
                .is_some_and(|src| src.contains("renamed.yaml"))
    });

    // Delete: new requests get 404.
    std::fs::remove_file(dir.join("renamed.yaml")).unwrap();
    d.wait_for("/v1/connections/beta", "delete", |s, _| s == 404);
    let (_, list) = d.get_json("/v1/connections");
    let names: Vec<&str> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);
}

#[test]
fn invalid_edit_keeps_last_good_and_status_reports_it() {
    let (_tmp, dir) = config_dir();
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "good.example.com")).unwrap();
    std::fs::write(dir.join("b.yaml"), with_host("beta", "b1.example.com")).unwrap();
    let d = Daemon::start(&dir, &[]);
    let generation = d.get_json("/v1/status").1["generation"].as_u64().unwrap();

    std::fs::write(
        dir.join("a.yaml"),
        with_host("alpha", "bad.example.com").replace("port: 587", "port: many"),
    )
    .unwrap();
    std::fs::write(dir.join("b.yaml"), with_host("beta", "b2.example.com")).unwrap();
    // The two writes may land in one reload or two: wait for the one that
    // applied b.yaml (a new generation) with a.yaml on its last good version.
    let status = d.wait_for("/v1/status", "partial reload", |_, b| {
        b["last_reload"]["result"] == "partial"
            && b["generation"].as_u64().unwrap_or(0) > generation
    });
    let errors: Vec<&str> = status["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e
                .ends_with("a.yaml:6:9: error: /smtp/port: expected an integer, found a string")),
        "{errors:?}"
    );
    assert!(status["generation"].as_u64().unwrap() > generation);
    let a = status["files"]["detail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("a.yaml"))
        .unwrap();
    assert_eq!(a["live"], "last_good");

    assert_eq!(
        host_of(&d.get_json("/v1/connections/alpha").1),
        Some("good.example.com")
    );
    d.wait_for("/v1/connections/beta", "other file applied", |_, b| {
        host_of(b) == Some("b2.example.com")
    });
    assert!(d.metric("mailplug_config_reloads_total{result=\"partial\"}") >= 1.0);
    assert!(d.metric("mailplug_config_errors") >= 1.0);
}

#[test]
fn many_files_changed_at_once_cause_one_reload() {
    let (_tmp, dir) = config_dir();
    for i in 0..200 {
        std::fs::write(
            dir.join(format!("c{i:03}.yaml")),
            with_host(&format!("c{i:03}"), "v1.example.com"),
        )
        .unwrap();
    }
    let d = Daemon::start(&dir, &[]);
    let before = d.metric("mailplug_config_reloads_total{result=\"ok\"}");
    // A `git checkout`-like burst: rewrite every file within a few ms.
    for i in 0..200 {
        std::fs::write(
            dir.join(format!("c{i:03}.yaml")),
            with_host(&format!("c{i:03}"), "v2.example.com"),
        )
        .unwrap();
    }
    d.wait_for("/v1/connections/c199", "bulk change", |_, b| {
        host_of(b) == Some("v2.example.com")
    });
    assert_eq!(
        host_of(&d.get_json("/v1/connections/c000").1),
        Some("v2.example.com")
    );
    std::thread::sleep(Duration::from_millis(400));
    let reloads = d.metric("mailplug_config_reloads_total{result=\"ok\"}") - before;
    assert!(
        (1.0..=2.0).contains(&reloads),
        "200 writes caused {reloads} reloads"
    );
}

#[test]
fn configmap_symlink_swap_is_picked_up() {
    let (_tmp, dir) = config_dir();
    let v1 = dir.join("..2026_11_26_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("conn.yaml"), with_host("cm", "v1.example.com")).unwrap();
    std::os::unix::fs::symlink("..2026_11_26_v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/conn.yaml", dir.join("conn.yaml")).unwrap();
    let d = Daemon::start(&dir, &[]);
    assert_eq!(
        host_of(&d.get_json("/v1/connections/cm").1),
        Some("v1.example.com")
    );
    assert_eq!(
        d.get_json("/v1/status").1["files"]["total"],
        1,
        "hidden ..data entries are not loaded twice"
    );

    // Kubelet's update: new timestamped dir, new ..data symlink renamed over the old one.
    let v2 = dir.join("..2026_11_26_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("conn.yaml"), with_host("cm", "v2.example.com")).unwrap();
    std::os::unix::fs::symlink("..2026_11_26_v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    d.wait_for("/v1/connections/cm", "symlink swap", |_, b| {
        host_of(b) == Some("v2.example.com")
    });
}

#[test]
fn sighup_and_api_trigger_reloads() {
    let (_tmp, dir) = config_dir();
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "one.example.com")).unwrap();
    // A debounce far longer than the test: only SIGHUP / the API can reload.
    let d = Daemon::start(&dir, &["--debounce-ms", "600000"]);
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "two.example.com")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        host_of(&d.get_json("/v1/connections/alpha").1),
        Some("one.example.com")
    );
    d.signal("HUP");
    d.wait_for("/v1/connections/alpha", "SIGHUP reload", |_, b| {
        host_of(b) == Some("two.example.com")
    });

    std::fs::write(dir.join("a.yaml"), with_host("alpha", "three.example.com")).unwrap();
    let (status, body) = d.post("/v1/reload");
    assert_eq!(status, 200);
    assert_eq!(body["last_reload"]["result"], "ok");
    assert_eq!(
        host_of(&d.get_json("/v1/connections/alpha").1),
        Some("three.example.com")
    );
}

#[test]
fn admin_api_requires_a_token_off_loopback_and_enforces_it() {
    let (_tmp, dir) = config_dir();
    std::fs::write(dir.join("a.yaml"), connection("alpha")).unwrap();
    let out = mailplug()
        .args(["serve", "--config"])
        .arg(&dir)
        .arg("--data-dir")
        .arg(dir.with_extension("data"))
        .args([
            "--listen-admin",
            "0.0.0.0:0",
            "--listen-public",
            "127.0.0.1:0",
        ])
        .env_remove("MAILPLUG_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a token"));

    let d = Daemon::start(&dir, &["--admin-token", "s3cr3t-token"]);
    assert_eq!(d.get("/v1/connections").0, 200);
    for path in [
        "/v1/connections",
        "/v1/status",
        "/metrics",
        "/healthz",
        "/nope",
    ] {
        let mut resp = d.agent.get(format!("{}{path}", d.admin)).call().unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path} without token");
        let _ = resp.body_mut().read_to_string();
        let resp = d
            .agent
            .get(format!("{}{path}", d.admin))
            .header("Authorization", "Bearer wrong")
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path} with wrong token");
    }
    // The public listener serves webhook routes only.
    let resp = d
        .agent
        .get(format!("{}/v1/connections", d.public))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = d
        .agent
        .post(format!("{}/webhooks/unknown", d.public))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[test]
fn strict_refuses_invalid_config_and_default_starts_with_valid_files() {
    let (_tmp, dir) = config_dir();
    std::fs::write(dir.join("good.yaml"), connection("good")).unwrap();
    std::fs::write(dir.join("bad.yaml"), "kind: Connection\nname: [\n").unwrap();
    let out = mailplug()
        .args(["serve", "--strict", "--config"])
        .arg(&dir)
        .arg("--data-dir")
        .arg(dir.with_extension("data"))
        .args([
            "--listen-admin",
            "127.0.0.1:0",
            "--listen-public",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.yaml:2:7: error: /: YAML syntax error")
    );

    let d = Daemon::start(&dir, &[]);
    assert_eq!(d.get("/v1/connections/good").0, 200);
    assert_eq!(d.get("/readyz").0, 200);
    let status = d.get_json("/v1/status").1;
    assert_eq!(status["last_reload"]["result"], "partial");
    assert_eq!(status["files"]["invalid"], 1);
}

#[test]
fn sigterm_exits_zero() {
    let (_tmp, dir) = config_dir();
    std::fs::write(dir.join("a.yaml"), connection("alpha")).unwrap();
    let mut d = Daemon::start(&dir, &[]);
    assert_eq!(d.get("/healthz").0, 200);
    d.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_store_url_of_another_scheme_exits_78_and_an_unreachable_database_73_without_the_password() {
    let (_tmp, dir) = config_dir();
    std::fs::write(dir.join("good.yaml"), connection("good")).unwrap();
    let serve = |store: &str| {
        mailplug()
            .args(["serve", "--config"])
            .arg(&dir)
            .arg("--data-dir")
            .arg(dir.with_extension("data"))
            .args([
                "--listen-admin",
                "127.0.0.1:0",
                "--listen-public",
                "127.0.0.1:0",
            ])
            .env("MAILPLUG_STORE_URL", store)
            .output()
            .unwrap()
    };
    let out = serve("mysql://app:hunter2@db.invalid/mail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("`mysql` is not supported"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let out = serve(&format!(
        "postgres://app:hunter2@127.0.0.1:{port}/mail?connect_timeout=2"
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(73), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}/mail")),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(
        !dir.with_extension("data").join("mailplug.db").exists(),
        "no SQLite store was made instead"
    );
}
