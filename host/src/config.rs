//! Configuration: YAML files → span-aware documents → JSON Schema → semantic
//! checks → validated objects, collecting every problem with its position.
//!
//! Results are kept per file so the daemon can apply valid files and keep the
//! last good version of invalid ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub mod check;
pub mod diagnostic;
pub mod model;
pub mod schema;
pub mod secret;
pub mod source;
pub mod yaml;

use diagnostic::{Diagnostic, did_you_mean};
pub use model::{ConnectionSpec, FromSpec, LimitsSpec, PluginSpec, Security, SmtpSpec, TlsSpec};
use schema::CompiledSchema;
pub use secret::{Secret, SecretRef};
use yaml::{Document, Pos};

/// Knobs for [`load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Resolve every `env`/`file` secret reference (and CA file) and report
    /// the ones that fail. Off by default: CI runners rarely hold production secrets.
    pub check_secrets: bool,
    /// Limits for YAML parsing.
    pub yaml_limits: yaml::Limits,
}

/// What the config layer needs to know about installed provider plugins.
pub trait ProviderCatalog {
    /// Whether a plugin with this id is installed.
    fn is_known(&self, id: &str) -> bool;
    /// The compiled schema of the plugin's `options`, if it declares one.
    fn options_schema(&self, id: &str) -> Option<&CompiledSchema>;
    /// Installed plugin ids, for hints.
    fn ids(&self) -> Vec<String>;
    /// Field errors (JSON Pointer, message) the provider's plugin reports
    /// for this connection's settings; empty when it accepts them.
    fn adapt_errors(&self, _conn: &Connection) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Where an object was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    /// The file, as found.
    pub file: PathBuf,
    /// Line of the object's `name` (or `id`) value.
    pub line: usize,
    /// Column of the object's `name` (or `id`) value.
    pub column: usize,
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A validated connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The connection as written (it passed the schema and semantic checks).
    pub spec: ConnectionSpec,
    /// Where it was defined.
    pub source: SourceLocation,
}

impl Connection {
    /// The connection's unique name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Directory relative secret and CA paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.source.file.parent().unwrap_or(Path::new("."))
    }
}

/// A validated community plugin registration.
#[derive(Debug, Clone)]
pub struct PluginRegistration {
    /// The registration as written.
    pub spec: PluginSpec,
    /// The `.wasm` path resolved against the registering file's directory.
    pub wasm_path: PathBuf,
    /// Where it was defined.
    pub source: SourceLocation,
}

/// Everything loaded from one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The file, as found.
    pub path: PathBuf,
    /// Connections defined in the file that passed every check.
    pub connections: Vec<Connection>,
    /// Plugin registrations defined in the file that passed every check.
    pub plugins: Vec<PluginRegistration>,
    /// Number of documents in the file.
    pub documents: usize,
    /// Problems found in the file, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl FileReport {
    /// Whether any problem in the file is an error (the file must not be applied).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The result of loading a set of paths.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// One report per file found.
    pub files: Vec<FileReport>,
    /// Problems not tied to a loaded file (missing paths, loops, empty directories).
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Every diagnostic, files first in load order.
    pub fn all_diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .chain(self.files.iter().flat_map(|f| f.diagnostics.iter()))
    }

    /// Connections of files without errors.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.files
            .iter()
            .filter(|f| !f.has_errors())
            .flat_map(|f| f.connections.iter())
    }
}

/// Loads and checks every YAML file under `paths`.
pub fn load(
    paths: &[PathBuf],
    opts: &LoadOptions,
    catalog: Option<&dyn ProviderCatalog>,
) -> Loaded {
    load_cached(paths, opts, catalog, &mut FileCache::default())
}

/// Per-file results of earlier loads, reused when a file's bytes are
/// unchanged. Keyed on content, not timestamps: coarse mtimes would let a
/// quick second write go unnoticed.
#[derive(Debug, Default)]
pub struct FileCache {
    entries: HashMap<PathBuf, (String, FileReport)>,
}

/// Like [`load`], re-checking only files whose content changed since the
/// last call with the same cache. Cross-file checks always run on the whole set.
pub fn load_cached(
    paths: &[PathBuf],
    opts: &LoadOptions,
    catalog: Option<&dyn ProviderCatalog>,
    cache: &mut FileCache,
) -> Loaded {
    let mut loaded = Loaded::default();
    let files = source::discover(paths, &mut loaded.diagnostics);
    let mut next = HashMap::with_capacity(files.len());
    for path in &files {
        let report = match source::read(path) {
            Err(d) => error_report(path, d),
            Ok(text) => {
                let reusable = cache.entries.remove(path).filter(|(old, report)| {
                    // Plugin registrations depend on the `.wasm` file too.
                    *old == text && report.plugins.is_empty()
                });
                let report = match reusable {
                    Some((_, report)) => report,
                    None => check_text(path, &text, opts, catalog),
                };
                next.insert(path.clone(), (text, report.clone()));
                report
            }
        };
        loaded.files.push(report);
    }
    cache.entries = next;
    cross_file_checks(&mut loaded);
    loaded
}

fn error_report(path: &Path, d: Diagnostic) -> FileReport {
    FileReport {
        path: path.to_path_buf(),
        connections: Vec::new(),
        plugins: Vec::new(),
        documents: 0,
        diagnostics: vec![d],
    }
}

/// Loads and checks one file on its own (cross-file checks need [`load`]).
pub fn load_file(
    path: &Path,
    opts: &LoadOptions,
    catalog: Option<&dyn ProviderCatalog>,
) -> FileReport {
    match source::read(path) {
        Ok(text) => check_text(path, &text, opts, catalog),
        Err(d) => error_report(path, d),
    }
}

fn check_text(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
    catalog: Option<&dyn ProviderCatalog>,
) -> FileReport {
    let mut report = FileReport {
        path: path.to_path_buf(),
        connections: Vec::new(),
        plugins: Vec::new(),
        documents: 0,
        diagnostics: Vec::new(),
    };
    let docs = match yaml::parse(text, opts.yaml_limits) {
        Ok(docs) => docs,
        Err(e) => {
            report
                .diagnostics
                .push(Diagnostic::error(path, e.pos, "", e.message));
            return report;
        }
    };
    let docs: Vec<Document> = docs.into_iter().filter(|d| !d.value.is_null()).collect();
    if docs.is_empty() {
        report.diagnostics.push(
            Diagnostic::file_error(
                path,
                "no YAML documents (the file is empty or holds only comments)",
            )
            .with_hint("add a `kind: Connection` document or delete the file"),
        );
        return report;
    }
    report.documents = docs.len();
    for doc in &docs {
        load_document(path, doc, opts, catalog, &mut report);
    }
    report.diagnostics.sort_by_key(|d| (d.line, d.column));
    report
}

const KINDS: [&str; 2] = ["Connection", "Plugin"];

fn load_document(
    path: &Path,
    doc: &Document,
    opts: &LoadOptions,
    catalog: Option<&dyn ProviderCatalog>,
    report: &mut FileReport,
) {
    let out = &mut report.diagnostics;
    let Some(object) = doc.value.as_object() else {
        out.push(Diagnostic::error(
            path,
            doc.start,
            "",
            "expected a mapping (a `kind: Connection` or `kind: Plugin` object)",
        ));
        return;
    };
    let kind = match object.get("kind") {
        None => {
            out.push(
                Diagnostic::error(path, doc.start, "", "missing required field `kind`")
                    .with_hint("add `kind: Connection` (or `kind: Plugin`)"),
            );
            return;
        }
        Some(Value::String(k)) if KINDS.contains(&k.as_str()) => k.as_str(),
        Some(other) => {
            let text = yaml::scalar_text(other);
            let d = Diagnostic::error(
                path,
                doc.value_pos("/kind"),
                "/kind",
                format!(
                    "unknown kind `{text}`; expected one of: {}",
                    KINDS.join(", ")
                ),
            );
            out.push(match did_you_mean(&text, KINDS) {
                Some(m) => d.with_hint(format!("did you mean `{m}`?")),
                None => d,
            });
            return;
        }
    };
    let before = out.len();
    let schema = if kind == "Connection" {
        &*schema::CONNECTION
    } else {
        &*schema::PLUGIN
    };
    schema.check(path, doc, "", out);
    if out[before..].iter().any(Diagnostic::is_error) {
        return;
    }
    // Objects are located by their name, which is what an operator searches for.
    let at = doc.value_pos(if kind == "Connection" { "/name" } else { "/id" });
    let location = SourceLocation {
        file: path.to_path_buf(),
        line: at.line,
        column: at.col,
    };
    let mut ctx = check::Ctx {
        file: path,
        doc,
        opts,
        out,
    };
    if kind == "Connection" {
        let spec: ConnectionSpec = match serde_json::from_value(doc.value.clone()) {
            Ok(s) => s,
            Err(e) => return deserialize_error(&mut ctx, e),
        };
        check::connection(&mut ctx, &spec, catalog);
        if !ctx.out[before..].iter().any(Diagnostic::is_error) {
            report.connections.push(Connection {
                spec,
                source: location,
            });
        }
    } else {
        let spec: PluginSpec = match serde_json::from_value(doc.value.clone()) {
            Ok(s) => s,
            Err(e) => return deserialize_error(&mut ctx, e),
        };
        check::plugin(&mut ctx, &spec);
        if !ctx.out[before..].iter().any(Diagnostic::is_error) {
            let wasm_path = path.parent().unwrap_or(Path::new(".")).join(&spec.path);
            report.plugins.push(PluginRegistration {
                spec,
                wasm_path,
                source: location,
            });
        }
    }
}

/// The schema and the serde types agree, so this only fires on a bug; it
/// still becomes a located error rather than a panic.
fn deserialize_error(ctx: &mut check::Ctx<'_>, e: serde_json::Error) {
    ctx.out.push(Diagnostic::error(
        ctx.file,
        ctx.doc.start,
        "",
        format!("invalid document: {e}"),
    ));
}

fn cross_file_checks(loaded: &mut Loaded) {
    // name -> every (file index, location) defining it
    let mut names: HashMap<(&'static str, String), Vec<(usize, Pos)>> = HashMap::new();
    for (i, file) in loaded.files.iter().enumerate() {
        for c in &file.connections {
            let pos = Pos {
                line: c.source.line,
                col: c.source.column,
            };
            names
                .entry(("connection", c.spec.name.clone()))
                .or_default()
                .push((i, pos));
        }
        for p in &file.plugins {
            let pos = Pos {
                line: p.source.line,
                col: p.source.column,
            };
            names
                .entry(("plugin", p.spec.id.clone()))
                .or_default()
                .push((i, pos));
        }
    }
    let mut dups: Vec<_> = names
        .into_iter()
        .filter(|(_, places)| places.len() > 1)
        .collect();
    dups.sort_by(|a, b| a.0.cmp(&b.0));
    for ((what, name), places) in dups {
        for (i, pos) in &places {
            let others: Vec<String> = places
                .iter()
                .filter(|(j, p)| (j, p) != (i, pos))
                .map(|(j, p)| format!("{}:{}:{}", loaded.files[*j].path.display(), p.line, p.col))
                .collect();
            let pointer = if what == "connection" { "/name" } else { "/id" };
            let file = &mut loaded.files[*i];
            let d = Diagnostic::error(
                &file.path,
                *pos,
                pointer,
                format!("duplicate {what} name `{name}`"),
            )
            .with_hint(format!("also defined at {}", others.join(", ")));
            file.diagnostics.push(d);
            file.diagnostics.sort_by_key(|d| (d.line, d.column));
        }
    }
    for file in &mut loaded.files {
        if file.has_errors() {
            file.connections.clear();
            file.plugins.clear();
        }
    }
}
