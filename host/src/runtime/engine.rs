//! The one wasmtime Engine: component model, epoch interruption, pooling
//! allocator; and the epoch ticker thread that drives deadlines.

use std::thread;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// One epoch tick; deadlines are counted in ticks.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Sizing of the engine shared by every plugin.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Component instances alive at once (in-flight calls plus per-connection instances).
    pub max_instances: u32,
    /// Largest memory cap any plugin may configure, in MiB.
    pub max_memory_mib: u32,
    /// Bytes of each linear memory kept resident (zeroed, not unmapped) between
    /// instances: cheaper re-instantiation at the cost of resident memory.
    pub memory_keep_resident: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_mib: 512,
            memory_keep_resident: 1 << 20,
        }
    }
}

/// Builds the engine and starts its epoch ticker.
pub(crate) fn build(options: &EngineOptions) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    let instances = options.max_instances.max(1);
    pool.total_component_instances(instances)
        // A Rust wasip2 component holds a few core instances (main module and
        // canonical-ABI shims) with one memory and a couple of tables.
        .total_core_instances(instances * 8)
        .total_memories(instances)
        .total_tables(instances * 4)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_core_instances_per_component(16)
        .max_memory_size(options.max_memory_mib as usize * (1 << 20))
        .linear_memory_keep_resident(options.memory_keep_resident)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Profiling aid: `MAILPLUG_WASM_PERFMAP=1` writes /tmp/perf-<pid>.map so
    // `perf report` names the plugins' own functions (docs/plugins-bench.md).
    if std::env::var_os("MAILPLUG_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;
    start_ticker(&engine)?;
    Ok(engine)
}

/// Increments the epoch every [`TICK`] for as long as the engine lives; the
/// thread holds only a weak reference so it never keeps the engine alive.
fn start_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("mailplug-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(TICK);
            }
        })?;
    Ok(())
}

/// Epoch ticks for a deadline in milliseconds (at least one).
pub(crate) fn deadline_ticks(deadline_ms: u32) -> u64 {
    let tick_ms = TICK.as_millis().max(1) as u64;
    (u64::from(deadline_ms)).div_ceil(tick_ms).max(1)
}
