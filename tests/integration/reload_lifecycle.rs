//! The config directory's lifecycle under a running daemon (removed,
//! re-created, swapped by rename or by a symlink above it then reloaded by
//! hand, made unreadable, watched by polling), and paths that must
//! never block or read without bound: FIFOs given to `validate`, FIFOs
//! inside a walked directory, `plugin test --body /dev/zero`.
//!
//! Read errors that cannot be produced for one process as root (EACCES) or
//! without affecting the whole test process (EMFILE) are covered in-process
//! by `daemon::reload` unit tests through an injected-error seam.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::Daemon;
use crate::support::{connection, exits_within, mailplug, mkfifo};

fn with_host(name: &str, host: &str) -> String {
    connection(name).replace("smtp.example.com", host)
}

fn conf_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    (tmp, dir)
}

fn live_of(status: &Value, file: &str) -> Option<String> {
    status["files"]["detail"]
        .as_array()?
        .iter()
        .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(file)))
        .and_then(|f| f["live"].as_str().map(str::to_owned))
}

fn host(d: &Daemon, name: &str) -> Option<String> {
    let (status, body) = d.get_json(&format!("/v1/connections/{name}"));
    (status == 200)
        .then(|| body["smtp"]["host"].as_str().map(str::to_owned))
        .flatten()
}

#[test]
fn removed_config_dir_keeps_connections_and_a_recreated_one_is_watched_again() {
    let (_tmp, dir) = conf_dir();
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "a.example.com")).unwrap();
    let d = Daemon::start(&dir, &[]);
    assert_eq!(host(&d, "alpha").as_deref(), Some("a.example.com"));

    std::fs::remove_dir_all(&dir).unwrap();
    let status = d.wait_for("/v1/status", "the removal to be reported", |_, s| {
        live_of(s, "a.yaml").as_deref() == Some("last_good")
    });
    assert_eq!(status["connections"], 1, "{status}");
    assert_eq!(status["last_reload"]["result"], "partial");
    assert!(
        status["errors"].to_string().contains("conf"),
        "the unreadable directory is named: {status}"
    );
    assert_eq!(host(&d, "alpha").as_deref(), Some("a.example.com"));

    // Re-created with new files: picked up without SIGHUP.
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("b.yaml"), with_host("beta", "b1.example.com")).unwrap();
    d.wait_for(
        "/v1/connections/beta",
        "beta in the re-created dir",
        |s, _| s == 200,
    );
    // The directory really holds other files now: alpha is gone.
    d.wait_for("/v1/connections/alpha", "alpha to be removed", |s, _| {
        s == 404
    });
    // And the new directory stays watched.
    std::fs::write(dir.join("b.yaml"), with_host("beta", "b2.example.com")).unwrap();
    d.wait_for(
        "/v1/connections/beta",
        "an edit in the re-created dir",
        |_, b| b["smtp"]["host"] == "b2.example.com",
    );
}

#[test]
fn config_dir_swapped_by_rename_is_served_and_watched_without_sighup() {
    let (tmp, dir) = conf_dir();
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "old.example.com")).unwrap();
    let d = Daemon::start(&dir, &[]);
    assert_eq!(host(&d, "alpha").as_deref(), Some("old.example.com"));

    let fresh = tmp.path().join("conf.new");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("a.yaml"), with_host("alpha", "new.example.com")).unwrap();
    std::fs::write(fresh.join("g.yaml"), with_host("gamma", "g.example.com")).unwrap();
    // `mv conf conf.old; mv conf.new conf`
    std::fs::rename(&dir, tmp.path().join("conf.old")).unwrap();
    std::fs::rename(&fresh, &dir).unwrap();
    d.wait_for("/v1/connections/alpha", "the swapped-in content", |_, b| {
        b["smtp"]["host"] == "new.example.com"
    });
    assert_eq!(host(&d, "gamma").as_deref(), Some("g.example.com"));

    // Edits now land in the new directory and are seen there.
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "newer.example.com")).unwrap();
    d.wait_for("/v1/connections/alpha", "an edit after the swap", |_, b| {
        b["smtp"]["host"] == "newer.example.com"
    });
    let (_, status) = d.get_json("/v1/status");
    assert!(
        !status.to_string().contains("conf.old"),
        "nothing is served from the old directory: {status}"
    );
}

/// `root/current -> rel1`, served as `root/current/conf`, with `alpha` at
/// `host`; and `rel2/conf` ready to be swapped in with `alpha` at `next`.
fn release_tree(host: &str, next: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    for (rel, h) in [("rel1", host), ("rel2", next)] {
        let conf = tmp.path().join(rel).join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("a.yaml"), with_host("alpha", h)).unwrap();
    }
    std::os::unix::fs::symlink("rel1", tmp.path().join("current")).unwrap();
    let conf = tmp.path().join("current").join("conf");
    (tmp, conf)
}

/// `ln -sfn rel2 current`, done atomically (`ln -s` + `mv -T`): the
/// directories the watch follows (rel1, rel1/conf) see no event, and the
/// root, where the rename happens, is not watched.
fn swap_release(root: &Path) {
    let next = root.join("current.next");
    std::os::unix::fs::symlink("rel2", &next).unwrap();
    std::fs::rename(&next, root.join("current")).unwrap();
}

/// Swaps the release under a daemon whose periodic re-check is out of the
/// way, reloads by hand with `manual_reload`, then edits a file of the new
/// release: the edit must be picked up without another manual reload.
fn manual_reload_rearms_the_watch(manual_reload: impl FnOnce(&Daemon)) {
    let (tmp, conf) = release_tree("one.example.com", "two.example.com");
    let d = Daemon::start(&conf, &["--watch-recheck", "1h"]);
    assert_eq!(host(&d, "alpha").as_deref(), Some("one.example.com"));

    swap_release(tmp.path());
    manual_reload(&d);
    d.wait_for("/v1/connections/alpha", "the manual reload", |_, b| {
        b["smtp"]["host"] == "two.example.com"
    });

    std::fs::write(
        tmp.path().join("rel2/conf/a.yaml"),
        with_host("alpha", "three.example.com"),
    )
    .unwrap();
    d.wait_for(
        "/v1/connections/alpha",
        "an edit after the manual reload, seen by the re-armed watch",
        |_, b| b["smtp"]["host"] == "three.example.com",
    );
}

#[test]
fn post_reload_rearms_the_watch_on_the_path_after_a_swap_it_could_not_see() {
    manual_reload_rearms_the_watch(|d| {
        let (status, body) = d.post("/v1/reload");
        assert_eq!(status, 200, "{body}");
    });
}

#[test]
fn sighup_rearms_the_watch_on_the_path_after_a_swap_it_could_not_see() {
    manual_reload_rearms_the_watch(|d| {
        let ok = Command::new("kill")
            .args(["-HUP", &d.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    });
}

#[test]
fn forced_polling_picks_up_edits_and_is_reported() {
    let (_tmp, dir) = conf_dir();
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "a1.example.com")).unwrap();
    let d = Daemon::start_env(
        &dir,
        &["--watch-recheck", "200ms"],
        &[("MAILPLUG_WATCH", "poll")],
    );
    let (_, metrics) = d.get("/metrics");
    assert!(
        metrics.contains("mailplug_config_watch_polling 1"),
        "{metrics}"
    );
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "a2.example.com")).unwrap();
    d.wait_for(
        "/v1/connections/alpha",
        "an edit seen by polling",
        |_, b| b["smtp"]["host"] == "a2.example.com",
    );
    std::fs::write(dir.join("b.yaml"), with_host("beta", "b.example.com")).unwrap();
    d.wait_for(
        "/v1/connections/beta",
        "a new file seen by polling",
        |s, _| s == 200,
    );
    std::fs::remove_file(dir.join("b.yaml")).unwrap();
    d.wait_for(
        "/v1/connections/beta",
        "a removal seen by polling",
        |s, _| s == 404,
    );
}

#[test]
fn validate_on_a_fifo_returns_promptly_with_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe.yaml");
    mkfifo(&fifo);
    // Nothing ever writes to the FIFO: a blocking open would never return.
    let child = mailplug()
        .arg("validate")
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = exits_within(child, "validate on a FIFO");
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("pipe.yaml"), "{out}");
    assert!(out.contains("FIFO"), "{out}");
}

#[test]
fn a_fifo_inside_a_walked_directory_is_reported_and_the_rest_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.yaml"), connection("alpha")).unwrap();
    mkfifo(&tmp.path().join("b.yaml"));
    let child = mailplug()
        .arg("validate")
        .arg(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = exits_within(child, "validate on a directory holding a FIFO");
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("b.yaml") && run.stdout.contains("FIFO"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("1 valid connection"), "{}", run.stdout);
}

#[test]
fn plugin_test_body_from_dev_zero_fails_with_a_size_error() {
    let tmp = tempfile::tempdir().unwrap();
    let child = mailplug()
        .args(["plugin", "test", "custom-smtp", "--body", "/dev/zero"])
        .arg("--data-dir")
        .arg(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = exits_within(child, "plugin test --body /dev/zero");
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("/dev/zero") && run.stderr.contains("16 MiB limit"),
        "{}",
        run.stderr
    );
}

/// `nobody`: as root, permission checks are bypassed, so a daemon meant to
/// meet `chmod 000` runs as this user instead.
const NOBODY: u32 = 65534;

/// A daemon run as an unprivileged user, talking only to 127.0.0.1.
struct Unprivileged {
    child: Child,
    admin: String,
    agent: ureq::Agent,
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Unprivileged {
    /// Starts `mailplug serve` on `dir`, as `nobody` when the tests run as root.
    fn start(tmp: &Path, dir: &Path) -> Self {
        use std::io::BufRead as _;
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        use std::os::unix::process::CommandExt as _;

        let data = tmp.join("data");
        std::fs::create_dir(&data).unwrap();
        let mut cmd = mailplug();
        if std::fs::metadata(tmp).unwrap().uid() == 0 {
            for p in [tmp, dir] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
            cmd.uid(NOBODY).gid(NOBODY);
        }
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(dir)
            .args([
                "--listen-admin",
                "127.0.0.1:0",
                "--listen-public",
                "127.0.0.1:0",
            ])
            .args(["--debounce-ms", "100", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let admin = line
            .split(' ')
            .find_map(|p| p.strip_prefix("admin="))
            .unwrap_or_else(|| panic!("no ready line: {line:?}"))
            .to_owned();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            child,
            admin,
            agent,
        }
    }

    /// Polls `path` (bounded: 20 s) until `pred` holds on its JSON.
    fn wait_for(&self, path: &str, what: &str, pred: impl Fn(u16, &Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut resp = self
                .agent
                .get(format!("{}{path}", self.admin))
                .call()
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value =
                serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
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
}

#[test]
fn chmod_000_on_the_config_dir_keeps_last_good_and_restored_files_are_current_again() {
    use std::os::unix::fs::PermissionsExt as _;
    let (tmp, dir) = conf_dir();
    std::fs::write(dir.join("a.yaml"), with_host("alpha", "a.example.com")).unwrap();
    std::fs::write(dir.join("b.yaml"), with_host("beta", "b-old.example.com")).unwrap();
    let d = Unprivileged::start(tmp.path(), &dir);
    d.wait_for("/v1/status", "both files current", |_, s| {
        live_of(s, "a.yaml").as_deref() == Some("current")
            && live_of(s, "b.yaml").as_deref() == Some("current")
    });
    // `b` breaks: its last good version is live.
    std::fs::write(dir.join("b.yaml"), "kind: Connection\nname: [").unwrap();
    d.wait_for("/v1/status", "b last good", |_, s| {
        live_of(s, "b.yaml").as_deref() == Some("last_good")
    });

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let status = d.wait_for("/v1/status", "the unreadable dir to be reported", |_, s| {
        live_of(s, "a.yaml").as_deref() == Some("last_good")
    });
    assert_eq!(status["connections"], 2, "{status}");
    assert!(
        status["errors"].to_string().contains("Permission denied"),
        "{status}"
    );

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = d.wait_for("/v1/status", "a current again", |_, s| {
        live_of(s, "a.yaml").as_deref() == Some("current")
    });
    // Still broken, and its last good version was not lost to the outage.
    assert_eq!(live_of(&status, "b.yaml").as_deref(), Some("last_good"));
    d.wait_for("/v1/connections/beta", "beta still served", |s, b| {
        s == 200 && b["smtp"]["host"] == "b-old.example.com"
    });
    std::fs::write(dir.join("b.yaml"), with_host("beta", "b-new.example.com")).unwrap();
    d.wait_for("/v1/connections/beta", "the fixed b", |_, b| {
        b["smtp"]["host"] == "b-new.example.com"
    });
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Sets the soft open-file limit of a running process (the hard one stays:
/// lowering it could not be undone without privileges).
fn set_nofile(pid: u32, limit: usize) {
    let out = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prlimit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_sighup_while_descriptors_are_exhausted_keeps_every_connection() {
    let (_tmp, dir) = conf_dir();
    for name in ["alpha", "beta", "gamma"] {
        std::fs::write(dir.join(format!("{name}.yaml")), connection(name)).unwrap();
    }
    let d = Daemon::start(
        &dir,
        &[
            "--max-connections-public",
            "4096",
            "--header-read-timeout",
            "60s",
        ],
    );
    assert!(host(&d, "beta").is_some());
    let pid = d.child.id();
    // An admin connection opened before the exhaustion stays usable during it.
    let mut admin = KeepAlive::connect(&d.admin);
    assert_eq!(admin.get_json("/v1/status")["connections"], 3);
    // Leave the daemon a few descriptors, then take them with idle sockets.
    let limit = open_fds(pid) + 8;
    set_nofile(pid, limit);
    let addr = d.public.trim_start_matches("http://").to_owned();
    let mut flood = Vec::new();
    for _ in 0..64 {
        if let Ok(s) = std::net::TcpStream::connect(&addr) {
            flood.push(s);
        }
    }
    // The daemon accepts until it runs out of descriptors.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) < limit && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(open_fds(pid) >= limit, "descriptors exhausted");
    let before = admin.get_json("/v1/status")["last_reload"]["at_unix"].clone();
    // Keep taking every descriptor the daemon frees (re-arming the watch
    // closes one) so the reload meets the exhaustion.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refill = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut more = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && more.len() < 256 {
                if let Ok(s) = std::net::TcpStream::connect(&addr) {
                    more.push(s);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            more
        })
    };
    d.signal("HUP");
    // Wait, on the connection opened earlier, for the reload that ran
    // during the exhaustion: every connection stays.
    let deadline = Instant::now() + Duration::from_secs(30);
    let during = loop {
        let status = admin.get_json("/v1/status");
        if status["last_reload"]["at_unix"] != before {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no reload while exhausted: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let more = refill.join().unwrap();
    assert_eq!(during["connections"], 3, "{during}");
    // If the reload could not read the files, it says so and keeps them as
    // their last good version. (Re-arming the watch usually frees a
    // descriptor first, so the read succeeds; the EMFILE branch itself is
    // forced deterministically by the unit tests in daemon::reload.)
    if during["last_reload"]["result"] == "partial" {
        let errors = during["errors"].to_string();
        assert!(errors.contains("Too many open files"), "{errors}");
    }
    drop(more);
    drop(flood);
    set_nofile(pid, 1024);
    // Every connection survived the reload that could not read the files.
    for name in ["alpha", "beta", "gamma"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = d.get_json(&format!("/v1/connections/{name}"));
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: {status} {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(d.get_json("/v1/status").1["connections"], 3);
}

/// One HTTP/1.1 keep-alive connection to the admin listener.
struct KeepAlive {
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl KeepAlive {
    fn connect(base: &str) -> Self {
        let stream = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            reader: std::io::BufReader::new(stream),
        }
    }

    fn get_json(&mut self, path: &str) -> Value {
        use std::io::{BufRead as _, Read as _, Write as _};
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    }
}
