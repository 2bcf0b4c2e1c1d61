//! Failure isolation: each misbehaviour of a real hostile guest fails only
//! that call, with a typed error naming plugin, export and cause.

use std::sync::atomic::Ordering;

use mailplug::runtime::{Export, FailureCause, PluginError, PluginLimits, Runtime};

use super::{FIXTURE_NOW, load_guest, request, runtime};

fn hostile(limits: PluginLimits) -> Runtime {
    let mut rt = runtime(FIXTURE_NOW);
    assert_eq!(load_guest(&mut rt, "hostile", limits), "hostile");
    rt
}

fn parse_failure(rt: &Runtime, body: &str) -> PluginError {
    let plugin = rt.plugin("hostile").unwrap();
    match plugin.instance().parse_webhook(&request(body, &[])) {
        Err(err) => err,
        Ok(other) => panic!("expected a plugin failure for {body:?}, got {other:?}"),
    }
}

/// After a failure the plugin and its neighbours keep answering.
fn assert_still_serving(rt: &Runtime) {
    let plugin = rt.plugin("hostile").unwrap();
    let events = plugin
        .instance()
        .parse_webhook(&request("ok", &[]))
        .unwrap()
        .unwrap();
    assert_eq!(events[0].recipient, "ok@example.com");
    let custom = rt.plugin("custom-smtp").unwrap();
    assert_eq!(custom.instance().describe().unwrap().id, "custom-smtp");
}

#[test]
fn infinite_loop_is_stopped_at_the_deadline() {
    let rt = hostile(PluginLimits {
        deadline_ms: Some(50),
        ..PluginLimits::default()
    });
    let err = parse_failure(&rt, "loop");
    assert_eq!(err.plugin, "hostile");
    assert_eq!(err.export, Export::ParseWebhook);
    assert_eq!(err.cause, FailureCause::Deadline { deadline_ms: 50 });
    assert!(
        err.to_string()
            .contains("plugin `hostile` failed in `parse-webhook`"),
        "{err}"
    );
    assert_still_serving(&rt);
    let metrics = rt.plugin("hostile").unwrap().metrics();
    assert_eq!(metrics.failures(), 1);
    assert_eq!(
        metrics
            .export(Export::ParseWebhook)
            .failures
            .load(Ordering::Relaxed),
        1
    );
}

#[test]
fn infinite_loop_in_verify_is_stopped_too() {
    let rt = hostile(PluginLimits {
        deadline_ms: Some(20),
        ..PluginLimits::default()
    });
    let err = rt
        .plugin("hostile")
        .unwrap()
        .instance()
        .verify_webhook(&request("loop", &[]), "s")
        .unwrap_err();
    assert_eq!(
        (err.export, err.cause),
        (
            Export::VerifyWebhook,
            FailureCause::Deadline { deadline_ms: 20 }
        )
    );
}

#[test]
fn unbounded_memory_growth_is_refused_at_the_cap() {
    let rt = hostile(PluginLimits {
        deadline_ms: Some(5_000),
        ..PluginLimits::default()
    });
    let err = parse_failure(&rt, "grow");
    assert_eq!(err.cause, FailureCause::MemoryCap { cap_mib: 32 });
    assert_still_serving(&rt);
}

#[test]
fn panic_fails_the_call_with_the_guests_message_and_backtrace() {
    let rt = hostile(PluginLimits::default());
    let err = parse_failure(&rt, "panic");
    let FailureCause::Trap {
        message,
        guest_output,
        backtrace,
    } = &err.cause
    else {
        panic!("expected a trap, got {err}");
    };
    assert!(message.contains("unreachable"), "{message}");
    assert!(
        guest_output.contains("hostile guest panics on purpose"),
        "{guest_output}"
    );
    assert!(
        backtrace.contains("hostile.wasm!parse-webhook"),
        "{backtrace}"
    );
    assert!(backtrace.contains("panicking"), "{backtrace}");
    assert_still_serving(&rt);
}

#[test]
fn a_hundred_megabytes_of_events_are_refused() {
    // With the default 32 MiB cap the guest cannot even build the output ...
    let rt = hostile(PluginLimits {
        deadline_ms: Some(10_000),
        ..PluginLimits::default()
    });
    let err = parse_failure(&rt, "flood:100000:1000");
    assert_eq!(err.cause, FailureCause::MemoryCap { cap_mib: 32 });
    // ... and with room to build it, the host refuses it after the call.
    let rt = hostile(PluginLimits {
        memory_mib: Some(320),
        deadline_ms: Some(20_000),
    });
    let err = parse_failure(&rt, "flood:100000:1000");
    let FailureCause::InvalidOutput(why) = &err.cause else {
        panic!("expected invalid output, got {err}")
    };
    assert!(
        why.contains("100000 events in one call (limit 10000)"),
        "{why}"
    );
    assert_still_serving(&rt);
}

#[test]
fn events_outside_the_contract_are_refused() {
    let rt = hostile(PluginLimits::default());
    for (case, needle) in [
        ("empty-recipient", "recipient is empty"),
        (
            "bounce-class-on-delivered",
            "bounce_class set on a Delivered event",
        ),
        ("time-out-of-range", "outside years 1970-9999"),
        ("control-chars", "recipient contains control characters"),
        ("huge-field", "diagnostic is 1048576 bytes long"),
        (
            "span-out-of-bounds",
            "recipient span 4294967293+10 is outside the 26-byte body",
        ),
        ("empty-provider", "provider is empty"),
    ] {
        let err = parse_failure(&rt, &format!("invalid:{case}"));
        let FailureCause::InvalidOutput(why) = &err.cause else {
            panic!("{case}: expected invalid output, got {err}")
        };
        assert!(why.contains(needle), "{case}: {why}");
    }
    assert_still_serving(&rt);
}

#[test]
fn a_plugin_that_cannot_instantiate_is_refused_and_others_keep_working() {
    let mut rt = runtime(FIXTURE_NOW);
    let source = mailplug::runtime::PluginSource {
        id: Some("oversized".into()),
        wasm: mailplug::runtime::WasmSource::Path(super::guest("oversized")),
        expected_sha256: None,
        limits: PluginLimits::default(),
    };
    let err = rt.load(source.clone()).unwrap_err();
    let mailplug::runtime::LoadError::Describe(err) = err else {
        panic!("expected a describe failure, got {err}")
    };
    assert_eq!(err.export, Export::Describe);
    let FailureCause::Instantiate(why) = &err.cause else {
        panic!("expected instantiate failure, got {err}")
    };
    assert!(why.contains("32 MiB memory cap"), "{why}");
    assert!(rt.plugin("oversized").is_none());
    assert_eq!(
        rt.plugin("custom-smtp")
            .unwrap()
            .instance()
            .describe()
            .unwrap()
            .id,
        "custom-smtp"
    );
    // The same component is fine with room for its memory: the cap was the cause.
    let roomy = mailplug::runtime::PluginSource {
        limits: PluginLimits {
            memory_mib: Some(128),
            ..PluginLimits::default()
        },
        ..source
    };
    assert_eq!(rt.load(roomy).unwrap().info().id, "oversized");
}

#[test]
fn a_reused_instance_is_reset_after_a_trap() {
    let rt = hostile(PluginLimits::default());
    let plugin = rt.plugin("hostile").unwrap();
    let before = plugin.metrics().instantiations.load(Ordering::Relaxed);
    let mut instance = plugin.instance();
    instance
        .parse_webhook(&request("ok", &[]))
        .unwrap()
        .unwrap();
    instance
        .parse_webhook(&request("ok", &[]))
        .unwrap()
        .unwrap();
    instance.parse_webhook(&request("panic", &[])).unwrap_err();
    instance
        .parse_webhook(&request("ok", &[]))
        .unwrap()
        .unwrap();
    // One instance for the first two calls, a fresh one after the trap.
    assert_eq!(
        plugin.metrics().instantiations.load(Ordering::Relaxed) - before,
        2
    );
}

#[test]
fn guest_stdout_and_stderr_do_not_break_the_call() {
    let rt = hostile(PluginLimits::default());
    let events = rt
        .plugin("hostile")
        .unwrap()
        .instance()
        .parse_webhook(&request("print", &[]))
        .unwrap()
        .unwrap();
    assert_eq!(events[0].recipient, "printed@example.com");
}

/// Collects formatted log output of the current thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Only callsites no other test hits concurrently are checked here: tracing
/// caches per-callsite interest globally, and a callsite first reached on
/// another thread without a subscriber can race with `with_default`.
#[test]
fn guest_logs_are_tagged_with_the_plugin_and_capped_per_call() {
    let rt = hostile(PluginLimits {
        deadline_ms: Some(10_000),
        ..PluginLimits::default()
    });
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut instance = rt.plugin("hostile").unwrap().instance();
        let events = instance
            .parse_webhook(&request("log-spam", &[]))
            .unwrap()
            .unwrap();
        assert_eq!(events[0].recipient, "logged@example.com");
        instance
            .parse_webhook(&request("print", &[]))
            .unwrap()
            .unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let spam = text.lines().filter(|l| l.contains("spam line")).count();
    assert_eq!(spam, 255, "one budget slot is kept for the notice");
    assert!(
        text.contains("plugin log limit of 256 lines per call reached"),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.len() < 5_000),
        "long lines are truncated"
    );
    assert!(
        text.contains("plugin=\"hostile\"") || text.contains("plugin=hostile"),
        "{text}"
    );
}

#[test]
fn a_component_with_the_wrong_export_shapes_is_refused_at_load() {
    let mut rt = runtime(FIXTURE_NOW);
    let source = mailplug::runtime::PluginSource {
        id: Some("wrong-shape".into()),
        wasm: mailplug::runtime::WasmSource::Path(super::guest("wrong_shape")),
        expected_sha256: None,
        limits: PluginLimits::default(),
    };
    let err = rt.load(source).unwrap_err();
    assert!(
        matches!(err, mailplug::runtime::LoadError::Invalid { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("not a usable provider component"),
        "{err}"
    );
    assert!(rt.plugin("wrong-shape").is_none());
    assert_still_serving_custom(&rt);
}

fn assert_still_serving_custom(rt: &Runtime) {
    let custom = rt.plugin("custom-smtp").unwrap();
    assert_eq!(custom.instance().describe().unwrap().id, "custom-smtp");
}

#[test]
fn unbounded_recursion_traps_with_stack_exhaustion() {
    let rt = hostile(PluginLimits::default());
    let err = parse_failure(&rt, "recurse");
    let FailureCause::Trap { message, .. } = &err.cause else {
        panic!("expected a trap, got {err}")
    };
    assert!(message.contains("call stack exhausted"), "{message}");
    assert_still_serving(&rt);
}

#[test]
fn a_looping_plugin_does_not_hold_up_other_calls() {
    let rt = hostile(PluginLimits {
        deadline_ms: Some(2_000),
        ..PluginLimits::default()
    });
    std::thread::scope(|s| {
        let looping = s.spawn(|| parse_failure(&rt, "loop"));
        // While one call spins until its deadline, others keep answering.
        let custom = rt.plugin("custom-smtp").unwrap();
        let mut instance = custom.instance();
        for _ in 0..50 {
            assert!(
                instance
                    .parse_webhook(&request("[]", &[]))
                    .unwrap()
                    .unwrap()
                    .is_empty()
            );
        }
        assert_eq!(
            looping.join().unwrap().cause,
            FailureCause::Deadline { deadline_ms: 2_000 }
        );
    });
}
