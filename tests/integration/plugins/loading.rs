//! Registering plugins: sha256 pins, ids, limits, and the compile cache.

use mailplug::digest::sha256_hex;
use mailplug::runtime::{
    CacheOutcome, EngineOptions, LoadError, PluginLimits, PluginSource, Runtime, RuntimeOptions,
    WasmSource,
};

use super::{FIXTURE_NOW, cache_dir, guest, runtime};

fn example(id: &str, sha256: Option<String>) -> PluginSource {
    PluginSource {
        id: Some(id.into()),
        wasm: WasmSource::Path(guest("example_provider")),
        expected_sha256: sha256,
        limits: PluginLimits::default(),
    }
}

#[test]
fn community_plugin_with_the_pinned_hash_loads() {
    let sha = sha256_hex(&std::fs::read(guest("example_provider")).unwrap());
    let mut rt = runtime(FIXTURE_NOW);
    let plugin = rt
        .load(example("example", Some(sha.to_uppercase())))
        .unwrap();
    assert_eq!(plugin.info().id, "example");
    assert_eq!(plugin.sha256(), sha);
    assert_eq!(
        rt.describe("example").unwrap().options_schema["properties"]["region"]["enum"][0],
        "eu"
    );
}

#[test]
fn community_plugin_with_a_wrong_hash_is_refused() {
    let mut rt = runtime(FIXTURE_NOW);
    let err = rt
        .load(example("example", Some("00".repeat(32))))
        .unwrap_err();
    assert!(matches!(err, LoadError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert!(rt.plugin("example").is_none());
}

#[test]
fn registration_id_must_match_describe() {
    let mut rt = runtime(FIXTURE_NOW);
    let err = rt.load(example("sendgrid", None)).unwrap_err();
    assert!(
        err.to_string().contains("describe() reports id `example`"),
        "{err}"
    );
}

#[test]
fn duplicate_ids_and_missing_files_are_refused() {
    let mut rt = runtime(FIXTURE_NOW);
    rt.load(example("example", None)).unwrap();
    assert!(matches!(
        rt.load(example("example", None)),
        Err(LoadError::Duplicate(_))
    ));
    let missing = PluginSource {
        wasm: WasmSource::Path("/nonexistent/p.wasm".into()),
        ..example("x", None)
    };
    assert!(matches!(rt.load(missing), Err(LoadError::Read { .. })));
    let garbage = PluginSource {
        wasm: WasmSource::Bytes(b"not wasm".to_vec()),
        ..example("x", None)
    };
    assert!(matches!(rt.load(garbage), Err(LoadError::Invalid { .. })));
}

#[test]
fn limits_out_of_range_are_refused() {
    let mut rt = runtime(FIXTURE_NOW);
    let source = PluginSource {
        limits: PluginLimits {
            memory_mib: Some(0),
            deadline_ms: None,
        },
        ..example("example", None)
    };
    assert!(
        rt.load(source)
            .unwrap_err()
            .to_string()
            .contains("memory_mib")
    );
}

#[test]
fn second_start_compiles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = || RuntimeOptions {
        engine: EngineOptions {
            max_instances: 4,
            ..EngineOptions::default()
        },
        cache_dir: Some(dir.path().join("plugin-cache")),
        ..RuntimeOptions::default()
    };
    let first = Runtime::with_builtins(options()).unwrap();
    assert!(
        first
            .plugins()
            .all(|p| p.cache_outcome() == CacheOutcome::Stored)
    );
    drop(first);
    let second = Runtime::with_builtins(options()).unwrap();
    assert!(second.plugins().count() >= 1);
    assert!(
        second
            .plugins()
            .all(|p| p.cache_outcome() == CacheOutcome::Hit)
    );
}

#[test]
fn a_corrupt_cache_entry_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("plugin-cache");
    let options = || RuntimeOptions {
        cache_dir: Some(cache.clone()),
        ..RuntimeOptions::default()
    };
    drop(Runtime::with_builtins(options()).unwrap());
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let rt = Runtime::with_builtins(options()).unwrap();
    assert!(
        rt.plugins()
            .all(|p| p.cache_outcome() == CacheOutcome::Recompiled)
    );
}

/// Flips bytes in the middle of every cache entry (in the artifact, past
/// any header), as a disk error or a partial copy would.
fn corrupt_every_entry(cache: &std::path::Path) -> usize {
    let mut corrupted = 0;
    for entry in std::fs::read_dir(cache).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "cwasm") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0xa5;
        }
        std::fs::write(&path, &bytes).unwrap();
        corrupted += 1;
    }
    corrupted
}

#[test]
fn a_cache_entry_with_flipped_bytes_is_recompiled_replaced_and_then_hit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("plugin-cache");
    let options = || RuntimeOptions {
        cache_dir: Some(cache.clone()),
        ..RuntimeOptions::default()
    };
    drop(Runtime::with_builtins(options()).unwrap());
    let builtins = mailplug::runtime::builtin::BUILTINS.len();
    assert_eq!(corrupt_every_entry(&cache), builtins);

    let rt = Runtime::with_builtins(options()).unwrap();
    assert_eq!(rt.plugins().count(), builtins);
    for p in rt.plugins() {
        assert_eq!(
            p.cache_outcome(),
            CacheOutcome::Recompiled,
            "{}",
            p.info().id
        );
        // The recompiled plugin works: a fresh instance answers describe.
        assert!(p.instance().describe().is_ok(), "{}", p.info().id);
    }
    drop(rt);
    let rt = Runtime::with_builtins(options()).unwrap();
    assert!(
        rt.plugins().all(|p| p.cache_outcome() == CacheOutcome::Hit),
        "the replaced entries are good"
    );
}

#[test]
fn validate_succeeds_after_the_cli_cache_was_corrupted() {
    let data = tempfile::tempdir().unwrap();
    let config =
        crate::support::tree(&[("conns/a.yaml", crate::support::connection("a").as_bytes())]);
    let validate = || {
        crate::support::mailplug()
            .arg("validate")
            .arg(config.path().join("conns"))
            .env("XDG_DATA_HOME", data.path())
            .env("SMTP_PASSWORD", "unused")
            .output()
            .unwrap()
    };
    let first = validate();
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let cache = data.path().join("mailplug").join("plugin-cache");
    let corrupted = corrupt_every_entry(&cache);
    assert!(corrupted >= 1, "validate left no cache entries");
    let snapshot = |cache: &std::path::Path| -> Vec<Vec<u8>> {
        let mut entries: Vec<_> = std::fs::read_dir(cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect();
        entries.sort();
        entries.iter().map(|p| std::fs::read(p).unwrap()).collect()
    };
    let broken = snapshot(&cache);

    let second = validate();
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    let repaired = snapshot(&cache);
    assert_eq!(repaired.len(), broken.len());
    for (before, after) in broken.iter().zip(&repaired) {
        assert_ne!(before, after, "a corrupted entry was left in place");
    }
    let third = validate();
    assert_eq!(third.status.code(), Some(0), "{third:?}");
    assert_eq!(
        snapshot(&cache),
        repaired,
        "the repaired entries are reused"
    );
}

#[test]
fn runtime_is_shareable_and_instances_can_move_between_threads() {
    fn shareable<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shareable::<Runtime>();
    shareable::<mailplug::runtime::Plugin>();
    movable::<mailplug::runtime::PluginInstance>();
    // And calls really work from several threads at once.
    let rt = runtime(FIXTURE_NOW);
    let plugin = rt.plugin("custom-smtp").unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut instance = plugin.instance();
                for _ in 0..20 {
                    assert!(
                        instance
                            .parse_webhook(&super::request("[]", &[]))
                            .unwrap()
                            .unwrap()
                            .is_empty()
                    );
                }
            });
        }
    });
    assert_eq!(
        plugin
            .metrics()
            .export(mailplug::runtime::Export::ParseWebhook)
            .calls
            .load(std::sync::atomic::Ordering::Relaxed),
        80
    );
}

/// A component built against the first published `mailplug:provider@0.1.0`
/// (before the additive `clock.signature-tolerance` and `replay` imports;
/// `plugins/test-guests/contract-v0`, plain wit-bindgen, no SDK) still
/// loads, verifies and parses: the compatibility rule of docs/plugins.md.
#[test]
fn a_component_of_the_first_0_1_0_contract_still_loads_verifies_and_parses() {
    let wasm = guest("contract_v0");
    let bytes = std::fs::read(&wasm).unwrap();
    let names = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(names("mailplug:provider/clock@0.1.0"));
    assert!(
        !names("mailplug:provider/replay"),
        "built before the replay import"
    );
    assert!(
        !names("signature-tolerance"),
        "built before signature-tolerance"
    );

    let tmp = tempfile::tempdir().unwrap();
    let body = tmp.path().join("body");
    std::fs::write(&body, "old@example.com").unwrap();
    let run = |token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailplug"))
            .args(["plugin", "test"])
            .arg(&wasm)
            .arg("--body")
            .arg(&body)
            .args(["--header", &format!("x-token: {token}")])
            .args(["--secret", "v0-secret", "--now", "1767268830"])
            .env("MAILPLUG_DATA_DIR", cache_dir().parent().unwrap())
            .output()
            .unwrap()
    };
    let ok = run("v0-secret");
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let events: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(events[0]["kind"], "delivered");
    assert_eq!(events[0]["recipient"], "old@example.com");
    assert_eq!(events[0]["occurred_at"], "2026-01-01T12:00:30Z");
    let refused = run("wrong");
    assert_eq!(refused.status.code(), Some(1));
    let out: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(out["verify_error"]["kind"], "bad-signature");
}
