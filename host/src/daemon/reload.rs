//! Reloading: turns a fresh load of the config directory into the next
//! immutable [`Snapshot`], keeping the last good version of every file that
//! no longer validates, so a broken edit never takes down what works.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::diagnostic::Diagnostic;
use crate::config::{self, Connection, FileReport, LoadOptions, PluginRegistration};
use crate::providers::Catalog;

/// Which version of a file is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Live {
    /// The file as it is on disk now.
    Current,
    /// The file is invalid now; its last valid version stays live.
    LastGood,
    /// The file is invalid and never was valid: nothing from it is live.
    None,
}

/// State of one file in a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    /// Which version is live.
    pub live: Live,
    /// Errors in the current version.
    pub errors: usize,
    /// Warnings in the current version.
    pub warnings: usize,
}

/// Outcome of one reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// Every file is valid and applied.
    Ok,
    /// Some files are invalid; the rest applied, the invalid ones keep their last good version.
    Partial,
}

impl ReloadResult {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Partial => "partial",
        }
    }
}

/// One immutable view of the whole validated configuration. Requests hold
/// an `Arc` of the snapshot they started with, so a reload never mixes old
/// and new settings within one operation.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases whenever the live configuration changes.
    pub generation: u64,
    /// Live connections by name.
    pub connections: BTreeMap<String, Arc<Connection>>,
    /// Live community plugin registrations by id.
    pub plugins: BTreeMap<String, Arc<PluginRegistration>>,
    /// Every file found, with which version of it is live.
    pub files: BTreeMap<PathBuf, FileStatus>,
    /// Current problems, as `mailplug validate` reports them.
    pub diagnostics: Vec<Diagnostic>,
    /// When this snapshot was built.
    pub loaded_at: SystemTime,
    /// How long the reload took.
    pub duration: Duration,
    /// Whether everything applied.
    pub result: ReloadResult,
    /// The Git commit checked out in the config directory, if it is a work tree.
    pub git_commit: Option<String>,
    /// The providers (first-party and registered plugins) these connections use.
    pub catalog: Arc<Catalog>,
}

impl Snapshot {
    /// Number of current errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

/// Builds snapshots from the config directory, remembering each file's last
/// valid version between reloads.
#[derive(Debug)]
pub struct Reloader {
    dir: PathBuf,
    opts: LoadOptions,
    /// Where compiled plugin components are cached.
    cache_dir: Option<PathBuf>,
    catalog: Arc<Catalog>,
    /// Identity of the plugin registrations `catalog` was built from.
    plugins_key: String,
    last_good: HashMap<PathBuf, FileReport>,
    cache: config::FileCache,
    generation: u64,
    fingerprint: String,
}

impl Reloader {
    /// A reloader for `dir`, with the first-party plugins loaded (compiled
    /// components cached in `cache_dir`).
    pub fn new(
        dir: PathBuf,
        opts: LoadOptions,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let catalog = Arc::new(Catalog::builtins(cache_dir.clone())?);
        Ok(Self {
            dir,
            opts,
            cache_dir,
            catalog,
            plugins_key: String::new(),
            last_good: HashMap::new(),
            cache: config::FileCache::default(),
            generation: 0,
            fingerprint: String::new(),
        })
    }

    /// The directory being loaded.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the directory and builds the next snapshot (blocking I/O).
    ///
    /// When the `kind: Plugin` registrations changed, the plugins are loaded
    /// into a new catalog and the files checked again against it. If any
    /// registration fails (unreadable, hash mismatch, invalid component) the
    /// previous catalog stays in use and the failures are reported.
    pub fn reload(&mut self) -> Snapshot {
        let started = Instant::now();
        let mut snapshot = self.reload_files(started);
        let key = plugins_key(&snapshot.plugins);
        if key == self.plugins_key {
            return snapshot;
        }
        let registrations: Vec<&PluginRegistration> =
            snapshot.plugins.values().map(|p| &**p).collect();
        let mut next = match Catalog::builtins(self.cache_dir.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot rebuild the plugin catalog; keeping the current one");
                return snapshot;
            }
        };
        let problems = next.register(&registrations);
        if problems.is_empty() {
            tracing::info!(plugins = ?snapshot.plugins.keys().collect::<Vec<_>>(), "plugin registrations changed; catalog swapped");
            self.catalog = Arc::new(next);
            self.plugins_key = key;
            // Connections must be checked again against the new providers.
            self.cache = config::FileCache::default();
            snapshot = self.reload_files(started);
        } else {
            snapshot.diagnostics.extend(problems);
            snapshot.result = ReloadResult::Partial;
        }
        snapshot
    }

    fn reload_files(&mut self, started: Instant) -> Snapshot {
        let catalog: &dyn config::ProviderCatalog = &*self.catalog;
        let loaded = config::load_cached(
            std::slice::from_ref(&self.dir),
            &self.opts,
            Some(catalog),
            &mut self.cache,
        );
        let mut files = BTreeMap::new();
        let mut present = HashMap::new();
        for report in &loaded.files {
            let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
            let live = if errors == 0 {
                self.last_good.insert(report.path.clone(), report.clone());
                Live::Current
            } else if self.last_good.contains_key(&report.path) {
                Live::LastGood
            } else {
                Live::None
            };
            present.insert(report.path.clone(), live);
            files.insert(
                report.path.clone(),
                FileStatus {
                    live,
                    errors,
                    warnings: report.diagnostics.len() - errors,
                },
            );
        }
        // Deleted (or renamed-away) files take their objects with them.
        self.last_good.retain(|path, _| present.contains_key(path));

        let mut diagnostics: Vec<Diagnostic> = loaded.all_diagnostics().cloned().collect();
        let mut connections = BTreeMap::new();
        let mut plugins = BTreeMap::new();
        // Current files first, so a name kept alive only by a stale version
        // never shadows a valid current definition.
        let mut order: Vec<(&PathBuf, &FileReport)> = self.last_good.iter().collect();
        order
            .sort_by_key(|(path, _)| (present.get(*path) != Some(&Live::Current), (*path).clone()));
        for (path, report) in order {
            for c in &report.connections {
                if let Some(existing) = connections.get(c.name()) {
                    let existing: &Arc<Connection> = existing;
                    diagnostics.push(Diagnostic::error(
                        path,
                        crate::config::yaml::Pos { line: c.source.line, col: c.source.column },
                        "/name",
                        format!(
                            "last good version of this file defines `{}`, now defined at {}; the stale definition is not applied",
                            c.name(),
                            existing.source
                        ),
                    ));
                    continue;
                }
                connections.insert(c.name().to_owned(), Arc::new(c.clone()));
            }
            for p in &report.plugins {
                plugins
                    .entry(p.spec.id.clone())
                    .or_insert_with(|| Arc::new(p.clone()));
            }
        }
        let result = if diagnostics.iter().any(Diagnostic::is_error) {
            ReloadResult::Partial
        } else {
            ReloadResult::Ok
        };
        let fingerprint = fingerprint(&connections, &plugins);
        if fingerprint != self.fingerprint {
            self.generation += 1;
            self.fingerprint = fingerprint;
        }
        Snapshot {
            generation: self.generation,
            connections,
            plugins,
            files,
            diagnostics,
            loaded_at: SystemTime::now(),
            duration: started.elapsed(),
            result,
            git_commit: super::git::head_commit(&self.dir),
            catalog: self.catalog.clone(),
        }
    }
}

/// What a catalog built from these registrations depends on.
fn plugins_key(plugins: &BTreeMap<String, Arc<PluginRegistration>>) -> String {
    plugins
        .values()
        .map(|p| {
            format!(
                "{}|{}|{}|{:?}|{:?}\n",
                p.spec.id,
                p.spec.sha256,
                p.wasm_path.display(),
                p.spec.limits.memory_mib,
                p.spec.limits.deadline_ms
            )
        })
        .collect()
}

/// A cheap identity of the live configuration, to tell whether a reload changed anything.
fn fingerprint(
    connections: &BTreeMap<String, Arc<Connection>>,
    plugins: &BTreeMap<String, Arc<PluginRegistration>>,
) -> String {
    let mut out = String::new();
    for c in connections.values() {
        out.push_str(&serde_json::to_string(&c.spec).unwrap_or_default());
        out.push_str(&c.source.to_string());
    }
    for p in plugins.values() {
        out.push_str(&serde_json::to_string(&p.spec).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str, host: &str) -> String {
        format!(
            "api_version: mailplug/v1\nkind: Connection\nname: {name}\nsmtp: {{ host: {host} }}\nfrom: {{ email: a@example.com }}\n"
        )
    }

    #[test]
    fn invalid_edit_keeps_last_good_and_other_files_apply() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, conn("a", "old.example.com")).unwrap();
        std::fs::write(&b, conn("b", "b1.example.com")).unwrap();
        let mut r = Reloader::new(dir.path().to_path_buf(), LoadOptions::default(), None).unwrap();
        let s1 = r.reload();
        assert_eq!(s1.connections.len(), 2);
        assert_eq!(s1.result, ReloadResult::Ok);

        std::fs::write(&a, "kind: Connection\nname: [broken").unwrap();
        std::fs::write(&b, conn("b", "b2.example.com")).unwrap();
        let s2 = r.reload();
        assert_eq!(s2.result, ReloadResult::Partial);
        assert_eq!(s2.files[&a].live, Live::LastGood);
        let host = |s: &Snapshot, n: &str| {
            s.connections[n]
                .spec
                .smtp
                .as_ref()
                .unwrap()
                .host
                .clone()
                .unwrap()
        };
        assert_eq!(host(&s2, "a"), "old.example.com");
        assert_eq!(host(&s2, "b"), "b2.example.com");
        assert!(s2.generation > s1.generation);

        std::fs::remove_file(&a).unwrap();
        let s3 = r.reload();
        assert!(
            !s3.connections.contains_key("a"),
            "deleted file's connection is gone"
        );
        assert_eq!(s3.result, ReloadResult::Ok);
    }

    #[test]
    fn same_size_rewrite_within_one_timestamp_tick_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, conn("a", "aaa.example.com")).unwrap();
        let mut r = Reloader::new(dir.path().to_path_buf(), LoadOptions::default(), None).unwrap();
        r.reload();
        std::fs::write(&a, conn("a", "bbb.example.com")).unwrap();
        let s = r.reload();
        assert_eq!(
            s.connections["a"]
                .spec
                .smtp
                .as_ref()
                .unwrap()
                .host
                .as_deref(),
            Some("bbb.example.com")
        );
    }

    #[test]
    fn never_valid_file_stays_absent_and_unchanged_reload_keeps_generation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.yaml"), conn("ok", "h")).unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: Connection\n").unwrap();
        let mut r = Reloader::new(dir.path().to_path_buf(), LoadOptions::default(), None).unwrap();
        let s1 = r.reload();
        assert_eq!(s1.connections.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(s1.files[&dir.path().join("bad.yaml")].live, Live::None);
        let s2 = r.reload();
        assert_eq!(s1.generation, s2.generation);
    }

    #[test]
    fn stale_last_good_never_shadows_a_current_definition() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, conn("x", "from-a")).unwrap();
        let mut r = Reloader::new(dir.path().to_path_buf(), LoadOptions::default(), None).unwrap();
        r.reload();
        std::fs::write(&a, "kind: Connection\nname: [").unwrap();
        std::fs::write(dir.path().join("b.yaml"), conn("x", "from-b")).unwrap();
        let s = r.reload();
        assert_eq!(
            s.connections["x"]
                .spec
                .smtp
                .as_ref()
                .unwrap()
                .host
                .as_deref(),
            Some("from-b")
        );
        assert!(
            s.diagnostics
                .iter()
                .any(|d| d.message.contains("stale definition"))
        );
    }
}
