//! Starts the shared aiosmtpd server once per test binary and builds
//! targets pointing at its ports.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use mailplug::mail::{Secret, Security, SmtpTarget};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The test login and its password (searched for in every output).
pub const USER: &str = "tester";
/// A second login with the same password, shaped like an address (Brevo's
/// plugin accepts only such SMTP logins).
pub const ADDRESS_USER: &str = "tester@smtp-relay.example.test";
pub const PASSWORD: &str = "Pw-9f3a-NEVER-LOG-ME";
/// The only MAIL FROM the test login may use.
pub const ALLOWED_FROM: &str = "sender@example.test";

/// The running server: ports, spool directory, CA file.
pub struct Server {
    pub submission: u16,
    pub smtps: u16,
    pub plain: u16,
    pub throttle: u16,
    pub login: u16,
    pub brief: u16,
    pub refuse: u16,
    /// Answers AUTH with 535 echoing the credentials sent (PLAIN and LOGIN).
    pub echo: u16,
    /// Like `echo`, offering only AUTH LOGIN.
    pub echo_login: u16,
    /// Accepts at most `RATE_LIMIT` MAIL FROM per sliding second (all its
    /// sessions together), the rest get 451 4.7.1.
    pub ratelimited: u16,
    /// Answers the end of DATA 300 ms after spooling the message.
    pub slow: u16,
    pub spool: PathBuf,
    pub ca_file: PathBuf,
    /// Held so the server lives as long as the test process: it exits when
    /// this pipe closes.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
    _tmp: tempfile::TempDir,
}

/// The shared server, started on first use. Panics (fails the test) when it
/// cannot start: these tests must never be skipped silently.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn write_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "mailplug test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let ca_file = dir.join("ca.pem");
    let cert_file = dir.join("server.pem");
    let key_file = dir.join("server.key");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert_file, leaf_cert.pem()).unwrap();
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    (ca_file, cert_file, key_file)
}

fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (ca_file, cert, key) = write_certs(&dir);
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/smtp/server.py");
    let python = std::env::var("MAILPLUG_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let stderr = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut child = Command::new(&python)
        .arg(&script)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--spool")
        .arg(&spool)
        .args(["--user", USER, "--also-user", ADDRESS_USER])
        .args(["--allowed-from", ALLOWED_FROM])
        .env("SMTP_TEST_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python} {}: {e}", script.display()));
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    // Wait (bounded) for the ports line.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let ports: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        let _ = child.kill();
        let mut log = String::new();
        let _ = std::fs::File::open(dir.join("server.log")).map(|mut f| f.read_to_string(&mut log));
        panic!(
            "the SMTP test server did not start (install it with \
             `python3 -m pip install --user -r tests/smtp/requirements.txt`); \
             stdout: {line:?}; stderr:\n{log}"
        )
    });
    let port = |name: &str| -> u16 {
        ports[name]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap()
    };
    Server {
        submission: port("submission"),
        smtps: port("smtps"),
        plain: port("plain"),
        throttle: port("throttle"),
        login: port("login"),
        brief: port("brief"),
        refuse: port("refuse"),
        echo: port("echo"),
        echo_login: port("echo_login"),
        ratelimited: port("ratelimited"),
        slow: port("slow"),
        spool,
        ca_file,
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
        _tmp: tmp,
    }
}

/// A target for `port`, trusting the test CA, authenticating as the test
/// login, sending from the allowed address.
pub fn target(name: &str, port: u16, security: Security) -> SmtpTarget {
    let s = server();
    SmtpTarget {
        connection: name.to_owned(),
        host: "localhost".to_owned(),
        port,
        security,
        username: Some(USER.to_owned()),
        username_is_secret: false,
        password: Some(Secret::new(PASSWORD)),
        ca_file: Some(s.ca_file.clone()),
        verify_tls: true,
        helo_name: "client.mailplug.test".to_owned(),
        allow_insecure_auth: false,
        extra_headers: Vec::new(),
        from_name: Some("Mailplug Tests".to_owned()),
        from_email: ALLOWED_FROM.to_owned(),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        max_connections: 2,
    }
}

/// The spool record of the message with `message_id`, waiting briefly for
/// the server to write it.
pub fn spooled(message_id: &str) -> serde_json::Value {
    let spool = &server().spool;
    for _ in 0..50 {
        for entry in std::fs::read_dir(spool).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                if v["message_id"] == message_id {
                    return v;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("message {message_id} not found in {}", spool.display())
}

/// How many times each recipient containing `tag` reached the test server
/// with the server's `received_at` of each arrival (one scan of the spool:
/// polling with [`spooled_for`] per recipient reads the spool once each).
pub fn arrivals(tag: &str) -> std::collections::HashMap<String, Vec<f64>> {
    let mut out: std::collections::HashMap<String, Vec<f64>> = std::collections::HashMap::new();
    for entry in std::fs::read_dir(&server().spool).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !text.contains(tag) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for r in v["rcpt_tos"].as_array().unwrap() {
            let r = r.as_str().unwrap();
            if r.contains(tag) {
                out.entry(r.to_owned())
                    .or_default()
                    .push(v["received_at"].as_f64().unwrap_or(0.0));
            }
        }
    }
    out
}

/// Spooled messages whose envelope recipients include `rcpt`.
pub fn spooled_for(rcpt: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&server().spool).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            if v["rcpt_tos"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r == rcpt))
            {
                out.push(v);
            }
        }
    }
    out
}

/// A loopback port with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
