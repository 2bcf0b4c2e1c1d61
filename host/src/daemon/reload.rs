//! Reloading: turns a fresh load of the config directory into the next
//! immutable [`Snapshot`], keeping the last good version of every file that
//! no longer validates, so a broken edit never takes down what works.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::diagnostic::Diagnostic;
use crate::config::{
    self, Connection, FileReport, Forwarder, LoadOptions, PluginRegistration, Workspace,
};
use crate::providers::Catalog;
use crate::state::{FileStatus, Live, ReloadResult, Snapshot};

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
    /// What the last snapshot served, to tell whether a reload changed anything.
    live: Served,
}

/// The objects a snapshot serves: connections, plugins, forwarders, workspaces.
type Served = (
    BTreeMap<String, Arc<Connection>>,
    BTreeMap<String, Arc<PluginRegistration>>,
    BTreeMap<String, Arc<Forwarder>>,
    BTreeMap<String, Arc<Workspace>>,
);

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
            live: Default::default(),
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
        #[cfg(test)]
        test_hooks::maybe_panic(&self.dir);
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

    /// After a reload panicked, the per-file cache may be half updated:
    /// forget it so the next reload checks every file again. The last good
    /// versions stay, so nothing live is lost.
    pub fn recover(&mut self) {
        self.cache = config::FileCache::default();
    }

    fn reload_files(&mut self, started: Instant) -> Snapshot {
        let catalog: &dyn config::ProviderCatalog = &*self.catalog;
        let loaded = config::load_cached(
            std::slice::from_ref(&self.dir),
            &self.opts,
            catalog,
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
        let mut diagnostics: Vec<Diagnostic> = loaded.all_diagnostics().cloned().collect();
        // A file not listed because its directory (or the whole config dir)
        // could not be read is not deleted: EMFILE, EACCES or a directory
        // mid-swap are outages, and its last good version stays live.
        let mut kept: Vec<&PathBuf> = self
            .last_good
            .keys()
            .filter(|path| {
                !present.contains_key(*path)
                    && loaded.unreadable.iter().any(|u| path.starts_with(u))
            })
            .collect();
        kept.sort();
        for path in kept {
            present.insert(path.clone(), Live::LastGood);
            files.insert(
                path.clone(),
                FileStatus {
                    live: Live::LastGood,
                    errors: 1,
                    warnings: 0,
                },
            );
            diagnostics.push(Diagnostic::file_error(
                path,
                "not read: its directory could not be read (see the error above); the last good version stays live",
            ));
        }
        // Deleted (or renamed-away) files take their objects with them.
        self.last_good.retain(|path, _| present.contains_key(path));

        let mut connections = BTreeMap::new();
        let mut plugins = BTreeMap::new();
        let mut forwarders = BTreeMap::new();
        let mut workspaces = BTreeMap::new();
        // Current files first, so a name kept alive only by a stale version
        // never shadows a valid current definition.
        let mut order: Vec<(&PathBuf, &FileReport)> = self.last_good.iter().collect();
        order
            .sort_by_key(|(path, _)| (present.get(*path) != Some(&Live::Current), (*path).clone()));
        for (path, report) in order {
            for c in &report.connections {
                live_once(
                    &mut connections,
                    (c.name(), ""),
                    c,
                    |c| &c.source,
                    path,
                    &mut diagnostics,
                );
            }
            for p in &report.plugins {
                plugins
                    .entry(p.id.clone())
                    .or_insert_with(|| Arc::new(p.clone()));
            }
            for f in &report.forwarders {
                live_once(
                    &mut forwarders,
                    (&f.name, "forwarder "),
                    f,
                    |f| &f.source,
                    path,
                    &mut diagnostics,
                );
            }
            for w in &report.workspaces {
                live_once(
                    &mut workspaces,
                    (&w.name, "workspace "),
                    w,
                    |w| &w.source,
                    path,
                    &mut diagnostics,
                );
            }
        }
        let result = if diagnostics.iter().any(Diagnostic::is_error) {
            ReloadResult::Partial
        } else {
            ReloadResult::Ok
        };
        if connections.is_empty() && !self.live.0.is_empty() {
            // Only reachable when the directory was read and really holds no
            // connection files any more: unreadable paths keep their files.
            tracing::warn!(
                dir = %self.dir.display(),
                removed = self.live.0.len(),
                "the config directory no longer defines any connection; all connections are removed"
            );
        }
        let served = (connections, plugins, forwarders, workspaces);
        if served != self.live {
            self.generation += 1;
            self.live = served.clone();
        }
        let (connections, plugins, forwarders, workspaces) = served;
        Snapshot {
            generation: self.generation,
            connections,
            plugins,
            forwarders,
            workspaces,
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

/// Adds `item` under `name` unless an earlier (current) file already did;
/// then this stale definition is reported in `path` and not applied.
/// `what` prefixes the name in the message (`forwarder `, `workspace `).
fn live_once<T: Clone>(
    map: &mut BTreeMap<String, Arc<T>>,
    (name, what): (&str, &str),
    item: &T,
    source: fn(&T) -> &config::SourceLocation,
    path: &std::path::Path,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let Some(existing) = map.get(name) else {
        map.insert(name.to_owned(), Arc::new(item.clone()));
        return;
    };
    let at = source(item);
    diagnostics.push(Diagnostic::error(
        path,
        crate::config::yaml::Pos {
            line: at.line,
            col: at.column,
        },
        "/name",
        format!(
            "last good version of this file defines {what}`{name}`, now defined at {}; the stale definition is not applied",
            source(existing)
        ),
    ));
}

/// What a catalog built from these registrations depends on.
fn plugins_key(plugins: &BTreeMap<String, Arc<PluginRegistration>>) -> String {
    plugins
        .values()
        .map(|p| {
            format!(
                "{}|{}|{}|{:?}|{:?}\n",
                p.id,
                p.sha256,
                p.wasm_path.display(),
                p.limits.memory_mib,
                p.limits.deadline_ms
            )
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod test_hooks {
    //! Fault injection for tests: make the next reload of one directory panic.

    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static PANIC_NEXT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// The next reload of `dir` panics (once).
    pub(crate) fn panic_next_reload(dir: &Path) {
        if let Ok(mut dirs) = PANIC_NEXT.lock() {
            dirs.push(dir.to_path_buf());
        }
    }

    pub(super) fn maybe_panic(dir: &Path) {
        let hit = PANIC_NEXT.lock().is_ok_and(|mut dirs| {
            let before = dirs.len();
            dirs.retain(|d| d != dir);
            dirs.len() != before
        });
        if hit {
            #[allow(clippy::panic, reason = "the injected fault under test")]
            {
                panic!("injected reload panic (test hook)");
            }
        }
    }
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
        let host = |s: &Snapshot, n: &str| s.connections[n].smtp.host.clone();
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
        assert_eq!(s.connections["a"].smtp.host, "bbb.example.com");
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
        assert_eq!(s.connections["x"].smtp.host, "from-b");
        assert!(
            s.diagnostics
                .iter()
                .any(|d| d.message.contains("stale definition"))
        );
    }

    use crate::config::source::hooks;

    fn reloader(dir: &Path) -> Reloader {
        Reloader::new(dir.to_path_buf(), LoadOptions::default(), None).unwrap()
    }

    #[test]
    fn descriptor_exhaustion_while_listing_keeps_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("sub/b.yaml");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(&a, conn("a", "a.example.com")).unwrap();
        std::fs::write(&b, conn("b", "b.example.com")).unwrap();
        let mut r = reloader(dir.path());
        let s1 = r.reload();
        assert_eq!(s1.connections.len(), 2);

        // What a SIGHUP under EMFILE looked like: the directory cannot be listed.
        hooks::fail_reads_under(dir.path(), libc::EMFILE);
        let s2 = r.reload();
        hooks::clear(dir.path());
        assert_eq!(
            s2.connections.keys().collect::<Vec<_>>(),
            ["a", "b"],
            "a read error is not a deletion"
        );
        assert_eq!(s2.result, ReloadResult::Partial);
        assert_eq!(s2.files[&a].live, Live::LastGood);
        assert_eq!(s2.files[&b].live, Live::LastGood);
        assert!(
            s2.diagnostics
                .iter()
                .any(|d| d.to_string().contains("Too many open files")),
            "{:?}",
            s2.diagnostics
        );
        assert_eq!(s2.generation, s1.generation, "nothing live changed");

        let s3 = r.reload();
        assert_eq!(s3.result, ReloadResult::Ok);
        assert_eq!(s3.files[&a].live, Live::Current);
        assert_eq!(s3.files[&b].live, Live::Current);
    }

    #[test]
    fn descriptor_exhaustion_opening_one_file_keeps_its_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, conn("a", "a.example.com")).unwrap();
        let mut r = reloader(dir.path());
        r.reload();
        hooks::fail_reads_under(&a, libc::EMFILE);
        let s = r.reload();
        hooks::clear(&a);
        assert_eq!(s.connections["a"].smtp.host, "a.example.com");
        assert_eq!(s.files[&a].live, Live::LastGood);
        assert_eq!(r.reload().files[&a].live, Live::Current);
    }

    #[test]
    fn unreadable_dir_keeps_a_last_good_version_through_to_when_it_is_readable_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, conn("a", "a-old.example.com")).unwrap();
        std::fs::write(&b, conn("b", "b.example.com")).unwrap();
        let mut r = reloader(dir.path());
        r.reload();
        // `a` breaks: its last good version is live.
        std::fs::write(&a, "kind: Connection\nname: [").unwrap();
        assert_eq!(r.reload().files[&a].live, Live::LastGood);

        // `chmod 000` on the directory (injected: root bypasses permissions).
        hooks::fail_reads_under(dir.path(), libc::EACCES);
        let s = r.reload();
        hooks::clear(dir.path());
        assert_eq!(s.connections["a"].smtp.host, "a-old.example.com");
        assert!(s.connections.contains_key("b"));
        assert!(
            s.diagnostics
                .iter()
                .any(|d| d.to_string().contains("Permission denied"))
        );

        // Access restored: `a` is still broken, and its last good version
        // was not lost (it used to come back as `none`); `b` is current.
        let s = r.reload();
        assert_eq!(s.files[&a].live, Live::LastGood);
        assert_eq!(s.connections["a"].smtp.host, "a-old.example.com");
        assert_eq!(s.files[&b].live, Live::Current);
        std::fs::write(&a, conn("a", "a-new.example.com")).unwrap();
        let s = r.reload();
        assert_eq!(s.files[&a].live, Live::Current);
        assert_eq!(s.connections["a"].smtp.host, "a-new.example.com");
    }

    #[test]
    fn removed_dir_keeps_connections_but_an_emptied_readable_dir_removes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conf");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), conn("a", "a.example.com")).unwrap();
        let mut r = reloader(&dir);
        r.reload();

        std::fs::remove_dir_all(&dir).unwrap();
        let s = r.reload();
        assert!(
            s.connections.contains_key("a"),
            "a vanished dir is an outage"
        );
        assert_eq!(s.files[&dir.join("a.yaml")].live, Live::LastGood);
        assert_eq!(s.result, ReloadResult::Partial);

        // The directory is back, readable, and holds no connection files:
        // the files really are gone.
        std::fs::create_dir(&dir).unwrap();
        let s = r.reload();
        assert!(s.connections.is_empty());
        assert!(s.files.is_empty());
    }
}
