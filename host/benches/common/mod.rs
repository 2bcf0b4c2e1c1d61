//! Shared benchmark helpers: the generated 1,000-connection config tree.

#![allow(dead_code, reason = "each bench uses a subset")]

/// Number of generated connection files.
pub const FILES: usize = 1_000;

/// Writes one generated connection file.
pub fn write_connection(dir: &std::path::Path, i: usize, host: &str) {
    let (port, security) = [(587, "starttls"), (465, "tls"), (2525, "starttls")][i % 3];
    let text = format!(
        "# yaml-language-server: $schema=../schemas/connection.schema.json\n\
         api_version: mailplug/v1\nkind: Connection\nname: conn-{i:04}\n\
         display_name: Generated connection {i}\n\
         smtp:\n  host: {host}\n  port: {port}\n  security: {security}\n\
         \x20 username: user{i}@example.com\n  password: {{ env: SMTP_PASSWORD_{i} }}\n\
         from:\n  name: Sender {i}\n  email: sender{i}@example.com\n\
         workspaces: [ws-{a}, ws-{b}]\n\
         webhook:\n  secret: {{ env: WEBHOOK_SECRET_{i} }}\n\
         limits: {{ max_connections: 4, per_second: 10, timeout_seconds: 30 }}\n",
        a = i % 7,
        b = i % 11,
    );
    let sub = dir.join(format!("team-{}", i % 10));
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join(format!("conn-{i:04}.yaml")), text).unwrap();
}

/// Generates [`FILES`] valid connection files under `dir`.
pub fn generate(dir: &std::path::Path) {
    for i in 0..FILES {
        write_connection(dir, i, &format!("smtp{i}.example.com"));
    }
}

/// Median of durations.
pub fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}
