//! Configuration: YAML files → span-aware documents → JSON Schema → semantic
//! checks → compiled, typed objects ([`Connection`], [`PluginRegistration`],
//! [`Forwarder`]),
//! collecting every problem with its position.
//!
//! Results are kept per file so the daemon can apply valid files and keep the
//! last good version of invalid ones. Nothing here depends on the rest of the
//! host: provider plugins are reached through the [`ProviderCatalog`] trait.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub mod catalog;
mod check;
mod compile;
pub mod connection;
pub mod diagnostic;
pub mod forwarder;
mod model;
pub mod schema;
pub mod secret;
pub mod source;
pub mod workspace;
pub mod yaml;

pub use catalog::{
    AdaptFailure, AdaptedSmtp, NoPlugins, PasswordSource, ProviderCatalog, SmtpOverrides,
};
pub use connection::{
    CUSTOM_SMTP, Connection, Limits, Mailbox, PasswordRef, PluginLimits, PluginRegistration,
    Provider, Security, Smtp, Webhook, effective_port_security,
};
use diagnostic::Diagnostic;
pub use forwarder::Forwarder;
pub use secret::{Secret, SecretRef};
pub use workspace::Workspace;
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

/// Where an object was defined.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// Everything loaded from one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The file, as found.
    pub path: PathBuf,
    /// Connections defined in the file that passed every check.
    pub connections: Vec<Connection>,
    /// Plugin registrations defined in the file that passed every check.
    pub plugins: Vec<PluginRegistration>,
    /// Forwarders defined in the file that passed every check.
    pub forwarders: Vec<Forwarder>,
    /// Workspace settings defined in the file that passed every check.
    pub workspaces: Vec<Workspace>,
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
    /// Paths that could not be read (see [`source::Discovered::unreadable`]):
    /// files once loaded from under them are not known to be gone.
    pub unreadable: Vec<PathBuf>,
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
pub fn load(paths: &[PathBuf], opts: &LoadOptions, catalog: &dyn ProviderCatalog) -> Loaded {
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
    catalog: &dyn ProviderCatalog,
    cache: &mut FileCache,
) -> Loaded {
    let mut loaded = Loaded::default();
    let found = source::discover(paths, &mut loaded.diagnostics);
    loaded.unreadable = found.unreadable;
    let mut next = HashMap::with_capacity(found.files.len());
    for path in &found.files {
        let report = match source::read(path) {
            // Listed a moment ago, gone now: deleted, like a file never listed.
            Err(e) if e.is_gone() => continue,
            Err(e) => error_report(path, e.to_diagnostic(path)),
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
        forwarders: Vec::new(),
        workspaces: Vec::new(),
        documents: 0,
        diagnostics: vec![d],
    }
}

/// Loads and checks one file on its own (cross-file checks need [`load`]).
pub fn load_file(path: &Path, opts: &LoadOptions, catalog: &dyn ProviderCatalog) -> FileReport {
    match source::read(path) {
        Ok(text) => check_text(path, &text, opts, catalog),
        Err(e) => error_report(path, e.to_diagnostic(path)),
    }
}

/// Checks the text of one file as if read from `path` (the web console's
/// validator uses it on text that is not on disk; cross-file checks need [`load`]).
pub fn check_text(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
    catalog: &dyn ProviderCatalog,
) -> FileReport {
    let mut report = FileReport {
        path: path.to_path_buf(),
        connections: Vec::new(),
        plugins: Vec::new(),
        forwarders: Vec::new(),
        workspaces: Vec::new(),
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
        compile::document(path, doc, opts, catalog, &mut report);
    }
    report.diagnostics.sort_by_key(|d| (d.line, d.column));
    report
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
                .entry(("connection", c.name.clone()))
                .or_default()
                .push((i, pos));
        }
        for p in &file.plugins {
            let pos = Pos {
                line: p.source.line,
                col: p.source.column,
            };
            names
                .entry(("plugin", p.id.clone()))
                .or_default()
                .push((i, pos));
        }
        for f in &file.forwarders {
            let pos = Pos {
                line: f.source.line,
                col: f.source.column,
            };
            names
                .entry(("forwarder", f.name.clone()))
                .or_default()
                .push((i, pos));
        }
        for w in &file.workspaces {
            let pos = Pos {
                line: w.source.line,
                col: w.source.column,
            };
            names
                .entry(("workspace", w.name.clone()))
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
            let pointer = if what == "plugin" { "/id" } else { "/name" };
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
            file.forwarders.clear();
            file.workspaces.clear();
        }
    }
}
