//! A throwaway PostgreSQL server per test that can be stopped and started
//! again on the same port (`initdb` into a temporary directory, `pg_ctl`,
//! as the `postgres` user when the tests run as root).
//!
//! When PostgreSQL is not installed the tests fail, unless
//! `MAILPLUG_SKIP_POSTGRES=1` is set: then they are skipped, loudly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Pg {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    root: bool,
}

/// The server for one test, or `None` when PostgreSQL tests are skipped.
pub fn start() -> Option<Pg> {
    if std::env::var("MAILPLUG_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: several replicas on PostgreSQL (MAILPLUG_SKIP_POSTGRES=1)");
        return None;
    }
    let bin = bin_dir().unwrap_or_else(|e| {
        panic!("{e}\n(install PostgreSQL, point MAILPLUG_PG_BIN at its bin directory, or set MAILPLUG_SKIP_POSTGRES=1 to skip these tests)")
    });
    let root = String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout)
        .trim()
        == "0";
    let dir = tempfile::Builder::new()
        .prefix("mailplug-replicas-pg-")
        .tempdir()
        .unwrap()
        .keep();
    if root {
        assert!(
            Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .unwrap()
                .success()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let pg = Pg {
        bin,
        dir,
        port,
        root,
    };
    let out = pg
        .command("initdb")
        .arg("-D")
        .arg(pg.dir.join("data"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg.up();
    Some(pg)
}

impl Pg {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: open sessions are ended).
    pub fn down(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database; its URL.
    pub fn database(&self, name: &str) -> String {
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        self.url(name)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("MAILPLUG_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
    }
    let version = |d: &Path| -> u32 {
        d.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|d| d.join("bin/pg_ctl").exists())
        .collect();
    found.sort_by_key(|d| version(d));
    found
        .pop()
        .map(|d| d.join("bin"))
        .ok_or_else(|| "PostgreSQL is not installed (no MAILPLUG_PG_BIN, no pg_config, no /usr/lib/postgresql/*/bin/pg_ctl)".to_owned())
}
