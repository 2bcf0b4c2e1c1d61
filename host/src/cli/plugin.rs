//! `mailplug plugin list|inspect|test`: run provider plugins without a
//! daemon, e.g. replay a recorded webhook against a golden file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::config::SecretRef;
use crate::runtime::{
    CallContext, Clock, ParseError, PluginInfo, PluginInstance, PluginLimits, PluginSource,
    Runtime, RuntimeOptions, VerifyError, WasmSource, WebhookRequest,
};

mod expect;
mod fixtures;
mod new;

/// Exit code of a failed `plugin test`: rejected, parse error or golden mismatch.
pub const TEST_FAILED: u8 = 1;

/// Flags of `mailplug plugin`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Data directory; compiled plugins are cached in `<data-dir>/plugin-cache`.
    #[arg(long, env = "MAILPLUG_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Compile plugins in memory only (no on-disk cache).
    #[arg(long, global = true)]
    no_cache: bool,
    /// Show plugin log lines down to debug level on stderr.
    #[arg(long, short, global = true)]
    verbose: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List the first-party plugins.
    List,
    /// Print what a plugin's `describe` returns (JSON).
    Inspect {
        /// A plugin id (first-party) or a path to a `.wasm` component.
        plugin: String,
    },
    /// Run a recorded webhook request through a plugin and print the unified events (JSON).
    Test(Box<TestArgs>),
    /// Create a standalone plugin project (SDK vendored, a signed sample and its expected events).
    New(new::NewArgs),
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// A plugin id (first-party) or a path to a `.wasm` component.
    plugin: String,
    /// The request body, used byte for byte.
    #[arg(
        long,
        required_unless_present = "fixtures",
        conflicts_with = "fixtures"
    )]
    body: Option<PathBuf>,
    /// Replay every case of this folder instead: `CASE.json` or `CASE.form`
    /// (the body), `CASE.headers.json` (optional) and `CASE.expected.json`
    /// (the golden output); prints a diff per failing case and a summary.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["expect", "headers_file"])]
    fixtures: Option<PathBuf>,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A JSON object of request headers (the fixtures' `*.headers.json`).
    #[arg(long, value_name = "FILE")]
    headers_file: Option<PathBuf>,
    /// Verify the signature first with this secret: `env:NAME`, `file:PATH` or the value itself.
    #[arg(long, value_name = "REF")]
    secret: Option<String>,
    /// The clock plugins see, in Unix seconds (replay old signatures).
    #[arg(long, value_name = "UNIX_SECONDS")]
    now: Option<i64>,
    /// Compare the output with this golden JSON file; exit 1 with a diff on mismatch.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// With --expect or --fixtures: write the output to the golden file(s)
    /// instead of comparing.
    #[arg(long)]
    bless: bool,
    /// HTTP method of the recorded request.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Path (and query) of the recorded request.
    #[arg(long, default_value = "/")]
    path: String,
    /// Memory cap for a `.wasm` plugin, MiB.
    #[arg(long)]
    memory_mib: Option<u32>,
    /// Deadline per call for a `.wasm` plugin, ms.
    #[arg(long)]
    deadline_ms: Option<u32>,
    /// The webhook URL as registered at the provider (what
    /// `endpoint.registered-url` answers; Mandrill signs it).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// An allowed Amazon SNS topic ARN (`webhook.sns.topics`; repeatable).
    #[arg(long = "sns-topic", value_name = "ARN")]
    sns_topics: Vec<String>,
    /// A trusted SNS signing certificate, `URL=PEM_FILE` (repeatable).
    /// `plugin test` never fetches a certificate.
    #[arg(long = "sns-cert", value_name = "URL=FILE")]
    sns_certs: Vec<String>,
}

impl TestArgs {
    /// What the plugin imports answer: `--url`, `--sns-topic`, `--sns-cert`.
    fn call_context(&self) -> anyhow::Result<CallContext> {
        let sns = if self.sns_topics.is_empty() && self.sns_certs.is_empty() {
            None
        } else {
            let mut certificates = std::collections::BTreeMap::new();
            for pair in &self.sns_certs {
                let Some((url, file)) = pair.rsplit_once('=') else {
                    bail!("--sns-cert {pair:?} is not URL=FILE");
                };
                crate::runtime::sns::check_certificate_url(url)
                    .map_err(|e| anyhow::anyhow!("--sns-cert: {e}"))?;
                certificates.insert(url.to_owned(), PathBuf::from(file));
            }
            Some(crate::runtime::sns::SnsTrust {
                settings: Arc::new(crate::runtime::sns::SnsSettings {
                    topics: self.sns_topics.clone(),
                    auto_confirm: false,
                    certificates,
                }),
                cache: Arc::default(),
            })
        };
        Ok(CallContext {
            registered_url: self.url.clone(),
            sns,
            ..CallContext::default()
        })
    }
}

/// Writes a line to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Runs `mailplug plugin`.
pub fn run(args: Args) -> anyhow::Result<u8> {
    if let Command::New(new) = &args.command {
        return new::run(new);
    }
    let level = if args.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    // Another subscriber may already be installed (e.g. by tests); keep it.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let mut options = RuntimeOptions {
        cache_dir: cache_dir(&args),
        ..RuntimeOptions::default()
    };
    if let Command::Test(test) = &args.command
        && let Some(now) = test.now
    {
        options.clock = Clock::Fixed(now);
    }
    let mut runtime = Runtime::with_builtins(options).context("loading the first-party plugins")?;
    match args.command {
        Command::New(_) => Ok(super::exit::OK),
        Command::List => list(&runtime),
        Command::Inspect { plugin } => {
            match resolve(&mut runtime, &plugin, PluginLimits::default()) {
                Ok(id) => inspect(&runtime, &id),
                Err(code) => Ok(code),
            }
        }
        Command::Test(test) => {
            let limits = PluginLimits {
                memory_mib: test.memory_mib,
                deadline_ms: test.deadline_ms,
            };
            let id = match resolve(&mut runtime, &test.plugin, limits) {
                Ok(id) => id,
                Err(code) => return Ok(code),
            };
            let Some(plugin) = runtime.plugin(&id) else {
                bail!("plugin `{id}` is not loaded")
            };
            if let Some(dir) = &test.fixtures {
                return fixtures::run(plugin, dir, &test);
            }
            webhook_test(plugin.instance(), &test)
        }
    }
}

fn cache_dir(args: &Args) -> Option<PathBuf> {
    if args.no_cache {
        return None;
    }
    match &args.data_dir {
        Some(data) => Some(data.join("plugin-cache")),
        None => crate::providers::default_cache_dir(),
    }
}

/// Loads `spec` if it is a file and returns the plugin id; otherwise prints
/// why and returns the exit code (2 unknown id, 78 unusable file).
fn resolve(runtime: &mut Runtime, spec: &str, limits: PluginLimits) -> Result<String, u8> {
    let path = Path::new(spec);
    // A directory named like a plugin id (e.g. the fixtures' `sendgrid/`)
    // does not shadow the first-party plugin; only a file does.
    if runtime.plugin(spec).is_some() && !path.is_file() {
        return Ok(spec.to_owned());
    }
    if !spec.ends_with(".wasm") && !path.exists() {
        let known: Vec<_> = runtime.plugins().map(|p| p.info().id.clone()).collect();
        eprintln!(
            "mailplug: no plugin `{spec}` (first-party plugins: {}; or give a path to a .wasm file)",
            known.join(", ")
        );
        return Err(super::exit::USAGE);
    }
    let source = PluginSource {
        id: None,
        wasm: WasmSource::Path(path.to_owned()),
        expected_sha256: None,
        limits,
    };
    match runtime.load(source) {
        Ok(plugin) => Ok(plugin.info().id.clone()),
        Err(err) => {
            eprintln!("mailplug: {err}");
            Err(super::exit::CONFIG)
        }
    }
}

fn list(runtime: &Runtime) -> anyhow::Result<u8> {
    // Columns as wide as their longest entry (display names vary).
    let width =
        |f: fn(&PluginInfo) -> usize| runtime.plugins().map(|p| f(p.info())).max().unwrap_or(0);
    let (id_w, version_w, name_w) = (
        width(|i| i.id.chars().count()).max(16),
        width(|i| i.version.chars().count()).max(8),
        width(|i| i.display_name.chars().count()).max(24),
    );
    for plugin in runtime.plugins() {
        let info = plugin.info();
        let caps: Vec<&str> = info.capabilities.iter().map(|c| c.name()).collect();
        emit(&format!(
            "{:<id_w$} {:<version_w$} {:<name_w$} {}",
            info.id,
            info.version,
            info.display_name,
            caps.join(",")
        ))?;
    }
    Ok(super::exit::OK)
}

fn inspect(runtime: &Runtime, id: &str) -> anyhow::Result<u8> {
    let Some(plugin) = runtime.plugin(id) else {
        bail!("no plugin `{id}`")
    };
    let out = json!({
        "describe": plugin.info(),
        "sha256": plugin.sha256(),
        "origin": plugin.origin(),
        "limits": plugin.limits(),
        "compile": plugin.cache_outcome(),
    });
    emit(&serde_json::to_string_pretty(&out)?)?;
    Ok(super::exit::OK)
}

/// `--secret env:NAME | file:PATH | VALUE`, resolved by the same rules as a
/// connection's secret references (relative files from the working directory).
fn resolve_secret(reference: &str) -> anyhow::Result<String> {
    let secret = SecretRef::from_flag(reference)
        .resolve(Path::new("."))
        .with_context(|| format!("--secret {}", SecretRef::from_flag(reference).describe()))?;
    Ok(secret.expose().to_owned())
}

/// Largest `--body` read. Webhook bodies are kilobytes; the bound keeps a
/// mistaken path (`/dev/zero`, a huge log) from exhausting memory. Pipes and
/// devices are allowed (`--body /dev/stdin`, `--body <(...)`), bounded alike.
pub const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

fn read_body(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let context = || format!("reading --body {}", path.display());
    let file = std::fs::File::open(path).with_context(context)?;
    let mut body = Vec::new();
    file.take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut body)
        .with_context(context)?;
    if body.len() as u64 > MAX_BODY_BYTES {
        bail!(
            "--body {}: larger than the {} MiB limit on request bodies",
            path.display(),
            MAX_BODY_BYTES / (1024 * 1024)
        );
    }
    Ok(body)
}

/// The headers of a `*.headers.json` file (a JSON object), names lower-cased.
fn headers_file(file: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let map: serde_json::Map<String, Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON object", file.display()))?;
    Ok(map
        .into_iter()
        .map(|(name, value)| {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            (name.to_ascii_lowercase(), value)
        })
        .collect())
}

/// The recorded request of `body` and `headers_file`, plus the `--header` flags.
fn request(
    test: &TestArgs,
    body: &Path,
    headers_file: Option<&Path>,
) -> anyhow::Result<WebhookRequest> {
    let body = read_body(body)?;
    let mut headers = match headers_file {
        Some(file) => self::headers_file(file)?,
        None => Vec::new(),
    };
    for header in &test.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("--header {header:?} is not `Name: value`");
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(WebhookRequest {
        method: test.method.clone(),
        path: test.path.clone(),
        headers,
        body,
    })
}

fn verify_error_json(err: &VerifyError) -> Value {
    match err {
        VerifyError::MissingHeader(h) => {
            json!({"verify_error": {"kind": "missing-header", "detail": h}})
        }
        VerifyError::Malformed(m) => json!({"verify_error": {"kind": "malformed", "detail": m}}),
        VerifyError::TimestampOutOfTolerance(s) => {
            json!({"verify_error": {"kind": "timestamp-out-of-tolerance", "detail": s}})
        }
        VerifyError::BadSignature => json!({"verify_error": {"kind": "bad-signature"}}),
    }
}

fn parse_error_json(err: &ParseError) -> Value {
    match err {
        ParseError::Malformed(m) => json!({"parse_error": {"kind": "malformed", "detail": m}}),
        ParseError::Invalid(m) => json!({"parse_error": {"kind": "invalid", "detail": m}}),
    }
}

/// Verifies (with --secret) and parses; the outcome as JSON and whether it is a success.
fn outcome(
    instance: &mut PluginInstance,
    test: &TestArgs,
    request: &WebhookRequest,
) -> anyhow::Result<(Value, bool)> {
    let context = test.call_context()?;
    if let Some(reference) = &test.secret {
        let secret = resolve_secret(reference)?;
        let verified = instance.verify_webhook_with(request, &secret, &context)?;
        if let Some(url) = instance.take_requests().certificate {
            eprintln!(
                "mailplug: the plugin asked for the signing certificate {url}; plugin test never fetches: pass --sns-cert '{url}=FILE'"
            );
        }
        if let Err(err) = verified {
            return Ok((verify_error_json(&err), false));
        }
    }
    let parsed = instance.parse_webhook_with(request, &context)?;
    let confirmations = instance.take_requests().confirmations;
    Ok(match parsed {
        // A subscription confirmation is part of the outcome.
        Ok(events) if !confirmations.is_empty() => (
            json!({"events": events, "subscription_confirmations": confirmations}),
            true,
        ),
        Ok(events) => (serde_json::to_value(events)?, true),
        Err(err) => (parse_error_json(&err), false),
    })
}

fn webhook_test(mut instance: PluginInstance, test: &TestArgs) -> anyhow::Result<u8> {
    let Some(body) = &test.body else {
        bail!("--body or --fixtures is required")
    };
    let request = request(test, body, test.headers_file.as_deref())?;
    let (actual, success) = match outcome(&mut instance, test, &request) {
        Ok(result) => result,
        Err(err) => {
            eprintln!("mailplug: {err:#}");
            return Ok(super::exit::SOFTWARE);
        }
    };
    let rendered = serde_json::to_string_pretty(&actual)?;
    emit(&rendered)?;
    let Some(expect_path) = &test.expect else {
        return Ok(if success {
            super::exit::OK
        } else {
            TEST_FAILED
        });
    };
    if test.bless {
        golden_write(expect_path, &rendered)?;
        return Ok(super::exit::OK);
    }
    let differences = golden_diff(expect_path, &actual)?;
    if differences.is_empty() {
        eprintln!("mailplug: output matches {}", expect_path.display());
        return Ok(super::exit::OK);
    }
    eprintln!("mailplug: output differs from {}:", expect_path.display());
    for line in differences {
        eprintln!("  {line}");
    }
    Ok(TEST_FAILED)
}

/// Writes `rendered` as the golden file `path` (`--bless`).
fn golden_write(path: &Path, rendered: &str) -> anyhow::Result<()> {
    std::fs::write(path, format!("{rendered}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("mailplug: wrote {}", path.display());
    Ok(())
}

/// How `actual` differs from the golden file `path` (empty: it matches).
fn golden_diff(path: &Path, actual: &Value) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the golden file {}", path.display()))?;
    let expected: Value = serde_json::from_str(&text)
        .with_context(|| format!("the golden file {} is not JSON", path.display()))?;
    Ok(expect::diff(&expected, actual))
}
