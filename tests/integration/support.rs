//! Shared helpers: running the binary, temporary config trees.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Repository root (tests live in `<root>/tests/integration`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `mailplug` command with a clean environment for secrets.
pub fn mailplug() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailplug"))
}

/// Result of running the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `mailplug` with arguments, in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    mailplug()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("spawn mailplug")
        .into()
}

/// Writes `files` (relative path → contents) into a new temporary directory.
pub fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, contents) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, contents).expect("write");
    }
    dir
}

/// A minimal valid connection document named `name`.
pub fn connection(name: &str) -> String {
    format!(
        "api_version: mailplug/v1\nkind: Connection\nname: {name}\nsmtp:\n  host: smtp.example.com\n  port: 587\n  security: starttls\n  username: u@example.com\n  password: {{ env: SMTP_PASSWORD }}\nfrom:\n  name: Example\n  email: news@example.com\n"
    )
}

/// Creates a FIFO (named pipe) at `path`.
pub fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Waits (bounded, generously) for `child` to exit; kills it and fails if
/// it does not, so a regression that blocks fails instead of hanging CI.
pub fn exits_within(mut child: Child, what: &str) -> Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap().into();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not return");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
