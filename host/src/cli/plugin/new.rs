//! `mailplug plugin new NAME [--dir DIR]`: a standalone plugin project
//! (its own workspace, the SDK vendored, a signed sample with its expected
//! events, a README) that builds outside this repository and passes
//! `mailplug plugin test --fixtures` on its sample at once.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The SDK crate, embedded so the project needs nothing but crates.io.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../../plugins/sdk/README.md"),
    ),
    (
        "wit/provider.wit",
        include_str!("../../../../plugins/sdk/wit/provider.wit"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/event.rs",
        include_str!("../../../../plugins/sdk/src/event.rs"),
    ),
    (
        "src/form.rs",
        include_str!("../../../../plugins/sdk/src/form.rs"),
    ),
    (
        "src/host.rs",
        include_str!("../../../../plugins/sdk/src/host.rs"),
    ),
    (
        "src/json.rs",
        include_str!("../../../../plugins/sdk/src/json.rs"),
    ),
    (
        "src/options.rs",
        include_str!("../../../../plugins/sdk/src/options.rs"),
    ),
    (
        "src/plugin.rs",
        include_str!("../../../../plugins/sdk/src/plugin.rs"),
    ),
    (
        "src/smtp.rs",
        include_str!("../../../../plugins/sdk/src/smtp.rs"),
    ),
    (
        "src/standard_webhooks.rs",
        include_str!("../../../../plugins/sdk/src/standard_webhooks.rs"),
    ),
    (
        "src/time.rs",
        include_str!("../../../../plugins/sdk/src/time.rs"),
    ),
    (
        "src/verify.rs",
        include_str!("../../../../plugins/sdk/src/verify.rs"),
    ),
];
/// The template plugin the project starts from.
const TEMPLATE: &str = include_str!("../../../../plugins/template/src/lib.rs");
/// Versions the first-party plugins are built and tested with.
const LOCK: &str = include_str!("../../../../plugins/Cargo.lock");

/// The secret the sample is signed with (a test value, printed in the README).
pub const SAMPLE_SECRET: &str = "example-test-secret";
/// The signing time of the sample and the clock to replay it with.
pub const SAMPLE_SIGNED_AT: i64 = 1_767_268_800;

/// Flags of `mailplug plugin new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// Plugin id and crate name: lower-case letters, digits and `-`, starting with a letter.
    name: String,
    /// Where to create the project (default: ./NAME); must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Creates the project; exit 2 for a bad name, 73 when the folder is in use.
pub(super) fn run(args: &NewArgs) -> anyhow::Result<u8> {
    let name = args.name.as_str();
    if !valid_name(name) {
        eprintln!(
            "mailplug: plugin name {name:?}: use lower-case letters, digits and `-`, starting \
             with a letter (it becomes the plugin id and the crate name)"
        );
        return Ok(crate::cli::exit::USAGE);
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        let empty = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            eprintln!(
                "mailplug: {} exists and is not empty; choose another --dir",
                dir.display()
            );
            return Ok(crate::cli::exit::CANTCREAT);
        }
    }
    for (path, text) in files(name) {
        write(&dir, &path, &text)?;
    }
    let wasm = format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    );
    println!("created plugin project `{name}` in {}", dir.display());
    println!("  cd {}", dir.display());
    println!("  cargo build --release --target wasm32-wasip2");
    println!(
        "  mailplug plugin test {wasm} --fixtures fixtures --secret {SAMPLE_SECRET} --now {}",
        SAMPLE_SIGNED_AT + 30
    );
    Ok(crate::cli::exit::OK)
}

fn write(dir: &Path, path: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Every file of the project, relative to its folder.
fn files(name: &str) -> Vec<(String, String)> {
    let mut files = vec![
        ("Cargo.toml".to_owned(), cargo_toml(name)),
        ("Cargo.lock".to_owned(), LOCK.to_owned()),
        (".gitignore".to_owned(), "/target\n".to_owned()),
        ("src/lib.rs".to_owned(), lib_rs(name)),
        ("README.md".to_owned(), readme(name)),
        (
            "vendor/mailplug-sdk/Cargo.toml".to_owned(),
            SDK_TOML.to_owned(),
        ),
    ];
    for (path, text) in SDK_FILES {
        files.push((format!("vendor/mailplug-sdk/{path}"), (*text).to_owned()));
    }
    let (body, headers, expected) = sample(name);
    files.push(("fixtures/sample.json".to_owned(), body));
    files.push(("fixtures/sample.headers.json".to_owned(), headers));
    files.push(("fixtures/sample.expected.json".to_owned(), expected));
    files
}

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
mailplug-sdk = {{ path = "vendor/mailplug-sdk" }}
serde = {{ version = "1", default-features = false, features = ["derive", "std"] }}
schemars = {{ version = "1.2", default-features = false, features = ["derive", "std"] }}

# A project of its own, not a member of an enclosing workspace.
[workspace]

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"
"#
    )
}

const SDK_TOML: &str = r#"[package]
name = "mailplug-sdk"
description = "Guest SDK for mailplug provider plugins (vendored by `mailplug plugin new`)"
version = "0.2.0"
edition = "2024"
license = "Apache-2.0"
publish = false

[dependencies]
wit-bindgen = { version = "0.57", default-features = false, features = ["macros", "realloc", "std"] }
serde = { version = "1", default-features = false, features = ["derive", "std"] }
serde_json = { version = "1", default-features = false, features = ["std"] }
schemars = { version = "1.2", default-features = false, features = ["derive", "std"] }
"#;

/// The template with the project's id and names.
fn lib_rs(name: &str) -> String {
    TEMPLATE
        .replace(
            "//! Example provider plugin (a template to copy): a fictional provider",
            &format!("//! Provider plugin `{name}`, started from mailplug's template: a provider"),
        )
        .replace(
            "const ID: &'static str = \"example\";",
            &format!("const ID: &'static str = \"{name}\";"),
        )
        .replace(
            "/// Options of `provider: example`.",
            &format!("/// Options of `provider: {name}`."),
        )
}

/// A signed sample request for the template's format and its events.
fn sample(name: &str) -> (String, String, String) {
    let body = r#"[{"event": "delivered", "email": "ada@example.com", "time": "2026-01-01T11:59:00Z", "id": "evt-1", "reason": "250 2.0.0 OK"},
 {"event": "bounce", "email": "gone@example.com", "time": "2026-01-01T11:59:30+01:00", "id": "evt-2", "reason": "550 5.1.1 user unknown"},
 {"event": "opened", "email": "ada@example.com", "time": "2026-01-01T11:59:40Z", "id": "evt-3"}]"#;
    let signed = format!("{SAMPLE_SIGNED_AT}{body}");
    // HMAC accepts keys of any length, so the error arm is never taken.
    let hex: String =
        match <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(SAMPLE_SECRET.as_bytes()) {
            Ok(mut mac) => {
                hmac::Mac::update(&mut mac, signed.as_bytes());
                let tag = hmac::Mac::finalize(mac).into_bytes();
                tag.iter().map(|b| format!("{b:02x}")).collect()
            }
            Err(_) => String::new(),
        };
    let headers = format!(
        "{{\n  \"Content-Type\": \"application/json\",\n  \"X-Example-Timestamp\": \"{SAMPLE_SIGNED_AT}\",\n  \"X-Example-Signature\": \"{hex}\"\n}}\n"
    );
    let event = |kind: &str,
                 class: &str,
                 rcpt: &str,
                 at: &str,
                 id: &str,
                 status: &str,
                 enh: &str,
                 diag: &str| {
        format!(
            "  {{\n    \"kind\": \"{kind}\",\n    \"bounce_class\": {class},\n    \"recipient\": \"{rcpt}\",\n    \"occurred_at\": \"{at}\",\n    \"provider\": \"{name}\",\n    \"provider_event_id\": \"{id}\",\n    \"smtp_status\": {status},\n    \"enhanced_status\": {enh},\n    \"diagnostic\": {diag}\n  }}"
        )
    };
    let expected = format!(
        "[\n{},\n{}\n]\n",
        event(
            "delivered",
            "null",
            "ada@example.com",
            "2026-01-01T11:59:00Z",
            "evt-1",
            "\"250\"",
            "\"2.0.0\"",
            "\"250 2.0.0 OK\""
        ),
        event(
            "bounced",
            "\"hard\"",
            "gone@example.com",
            "2026-01-01T10:59:30Z",
            "evt-2",
            "\"550\"",
            "\"5.1.1\"",
            "\"550 5.1.1 user unknown\""
        ),
    );
    (body.to_owned(), headers, expected)
}

fn readme(name: &str) -> String {
    let wasm = name.replace('-', "_");
    let now = SAMPLE_SIGNED_AT + 30;
    format!(
        "# {name}: a mailplug provider plugin

Created by `mailplug plugin new {name}`. `src/lib.rs` is the plugin: it
describes itself, adapts connection options to SMTP settings, verifies a
webhook signature and turns the provider's events into unified delivery
events. Edit it for your provider; the SDK (`vendor/mailplug-sdk`, with its
own README) has the event builder, verifiers, JSON/form/time helpers.

## Build

    rustup target add wasm32-wasip2
    cargo build --release --target wasm32-wasip2

The component is `target/wasm32-wasip2/release/{wasm}.wasm`.

## Test

`fixtures/` holds recorded requests: `CASE.json` (the body, byte for byte),
`CASE.headers.json` and `CASE.expected.json` (the events it must produce).
The sample is signed with the test secret `{SAMPLE_SECRET}` at Unix time
{SAMPLE_SIGNED_AT}, so replay it with the clock pinned 30 s later:

    mailplug plugin test target/wasm32-wasip2/release/{wasm}.wasm \\
      --fixtures fixtures --secret {SAMPLE_SECRET} --now {now}

Add a case per event type and failure of your provider; after an intended
change, `--bless` rewrites the expected files (review the diff).

## Use

Point a plugin document of the daemon's config at the `.wasm` file and set
`provider: {name}` on a connection; `mailplug plugin inspect` shows what
the component reports.
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plugin_ids() {
        for ok in ["acme", "acme-mail", "a2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "2acme",
            "acme-",
            "acme_mail",
            "acme mail",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_template_substitutions_all_apply() {
        let lib = lib_rs("acme");
        assert!(lib.contains("const ID: &'static str = \"acme\";"));
        assert!(lib.contains("Options of `provider: acme`"));
        assert!(lib.contains("Provider plugin `acme`"));
        assert!(!lib.contains("\"example\""));
    }
}
