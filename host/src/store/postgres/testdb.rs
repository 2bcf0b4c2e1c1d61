//! A throwaway PostgreSQL server for tests: `initdb` into a temporary
//! directory, `postgres` on a free loopback port (as the unprivileged
//! `postgres` user when the tests run as root), one database per test so
//! tests run in parallel. One server per test process; it stops when the
//! process exits (its supervisor shell reads our end of a pipe and stops
//! the server at end of file).
//!
//! When PostgreSQL is not installed the tests fail, unless
//! `MAILPLUG_SKIP_POSTGRES=1` is set: then they are skipped, loudly.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The server of this test process.
struct Server {
    port: u16,
    /// The CA that signed the server's certificate (TLS tests trust it).
    ca_file: PathBuf,
    /// Keeps the supervisor's stdin open: closing it stops the server.
    _supervisor: Mutex<(Child, ChildStdin)>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A URL of a fresh, empty database on the test server; `None` (after a
/// loud message) when PostgreSQL tests are skipped by
/// `MAILPLUG_SKIP_POSTGRES=1`. Panics with the reason when the server
/// cannot start and skipping was not asked for.
pub(crate) fn database() -> Option<String> {
    let server = server()?;
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = postgres::Client::connect(&server.url("postgres"), postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
    Some(server.url(&name))
}

/// The PEM file of the CA the test server's certificate (for `127.0.0.1`
/// and `localhost`) is signed by; `None` when skipped like [`database`].
pub(crate) fn ca_file() -> Option<PathBuf> {
    server().map(|s| s.ca_file.clone())
}

/// The server, started on first use.
fn server() -> Option<&'static Server> {
    let skip = std::env::var("MAILPLUG_SKIP_POSTGRES").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SKIPPED: PostgreSQL store test (MAILPLUG_SKIP_POSTGRES=1)");
        return None;
    }
    match SERVER.get_or_init(start) {
        Ok(s) => Some(s),
        Err(e) => panic!(
            "PostgreSQL test server: {e}\n(install PostgreSQL, point MAILPLUG_PG_BIN at its bin directory, or set MAILPLUG_SKIP_POSTGRES=1 to skip these tests)"
        ),
    }
}

impl Server {
    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

/// Where `initdb` and `postgres` are.
fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("MAILPLUG_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    // The newest major version (numerically: 9.6 is older than 15).
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
        .filter(|d| d.join("bin/initdb").exists())
        .collect();
    found.sort_by_key(|d| version(d));
    found.pop().map(|d| d.join("bin")).ok_or_else(|| {
        "PostgreSQL is not installed (no MAILPLUG_PG_BIN, no pg_config, no /usr/lib/postgresql/*/bin/initdb)".to_owned()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args...`, as the `postgres` user when we are root (the server
/// refuses to run as root).
fn command(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start() -> Result<Server, String> {
    let bin = bin_dir()?;
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("mailplug-pg-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?
        .keep();
    let data = dir.join("data");
    let ca_file = write_certs(&dir)?;
    if root {
        let status = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err(format!("chown postgres {} failed", dir.display()));
        }
    }
    let out = command(root, &bin.join("initdb"))
        .arg("-D")
        .arg(&data)
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
        .map_err(|e| format!("running initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port();
    // The supervisor starts the server, waits for end of file on stdin (this
    // process exited, or dropped it), then stops it and removes the files.
    let script = r#"
        "$1" -D "$2/data" -k "$2" -p "$3" -c listen_addresses=127.0.0.1 -c fsync=off \
             -c ssl=on -c ssl_cert_file="$2/server.pem" -c ssl_key_file="$2/server.key" \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
             >"$2/server.log" 2>&1 &
        server=$!
        cat >/dev/null
        kill -INT "$server"
        wait "$server"
        rm -rf "$2"
    "#;
    let mut child = command(root, Path::new("/bin/sh"))
        .arg("-c")
        .arg(script)
        .arg("pg-supervisor")
        .arg(bin.join("postgres"))
        .arg(&dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| "no stdin pipe to the supervisor".to_owned())?;
    let server = Server {
        port,
        ca_file,
        _supervisor: Mutex::new((child, stdin)),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match postgres::Client::connect(&server.url("postgres"), postgres::NoTls) {
            Ok(_) => return Ok(server),
            Err(e) if Instant::now() >= deadline => {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "postgres did not accept connections in 30 s: {e}\n{log}"
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A CA and a server certificate it signed, for `127.0.0.1` and
/// `localhost`, written to `dir`; returns the CA's file.
fn write_certs(dir: &Path) -> Result<PathBuf, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use std::os::unix::fs::PermissionsExt as _;
    let e = |e: rcgen::Error| format!("test certificates: {e}");
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "mailplug PostgreSQL test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(e)?;
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).map_err(e)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).map_err(e)?;
    let io = |e: std::io::Error| format!("writing test certificates: {e}");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).map_err(io)?;
    std::fs::write(dir.join("server.pem"), cert.pem()).map_err(io)?;
    let key_file = dir.join("server.key");
    std::fs::write(&key_file, key.serialize_pem()).map_err(io)?;
    // The server refuses a key others can read.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(ca_file)
}

/// A loopback port that refuses connections while the returned socket
/// lives: bound but never listening, so no test running in parallel can
/// take it. (A port found free and released again can be bound meanwhile by
/// another test's listener, which accepts the connection and never speaks
/// PostgreSQL: the start-up then waits forever.)
pub(crate) fn refused_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("binding a loopback port");
    let port = socket.local_addr().expect("the bound address").port();
    (socket, port)
}
