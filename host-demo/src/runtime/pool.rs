//! The engine and its instance pool: every component instance (a tenant operation's, and the
//! parse instance beside it) takes a slot of wasmtime's pooling allocator, sized once from the
//! configured limits, so a fresh instance reuses address space that is already reserved
//! instead of mapping and unmapping memory each time.

use std::path::PathBuf;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::Limits;
use crate::error::HostError;

/// What the component needs per instance (measured with `wasm-tools print`: three core
/// instances (the program, the WASI shim and its fixup), one memory, two tables), doubled so a
/// rebuilt component with one more shim still fits.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;
/// The most elements a table may have; the store's limiter uses the same figure.
pub(super) const TABLE_ELEMENTS: usize = 100_000;
/// A 32-bit linear memory cannot be larger.
const WASM32_MAX_MEMORY: u64 = 4 << 30;

/// Concurrent instances of a CLI process: one operation at a time (its instance and its
/// parse instance), with room for a second operation (a check after a validation, a reply's
/// copy saved by another instance).
pub const CLI_INSTANCES: u32 = 8;

/// How a host sizes its runtime. Made once per process, shared by every tenant it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The largest memory cap any instance may be given, in bytes (a session's
    /// `limits.guest_memory_mb` or a parse budget's `limits.parse_memory_mb`): the pool's
    /// slot size. An instance asked for more is refused with an error saying so.
    pub max_memory_bytes: usize,
    /// How many component instances may exist at once. Each running operation holds one,
    /// plus one while it parses fetched mail. One more is refused until one ends.
    pub max_instances: u32,
    /// Where the compiled component is cached (see `cache.rs`); `None`: compile at each load.
    pub cache_dir: Option<PathBuf>,
    /// Instances from the pool (the default); `false` maps each instance's memory on demand
    /// (what the benchmark compares the pool with).
    pub pooled: bool,
}

impl RuntimeOptions {
    /// Sized for one process serving tenants with these limits: slots as large as the larger
    /// of the session and the parse memory caps (at least the 64 MB the CLI's own short calls,
    /// OAuth and discovery, use), `CLI_INSTANCES` of them, the default cache.
    pub fn for_limits(limits: &Limits) -> RuntimeOptions {
        let mb = limits.guest_memory_mb.max(limits.parse_memory_mb).max(64) as usize;
        RuntimeOptions {
            max_memory_bytes: mb.saturating_mul(1 << 20),
            max_instances: CLI_INSTANCES,
            cache_dir: super::cache::default_dir(),
            pooled: true,
        }
    }

    /// The same with room for `n` instances at once.
    pub fn with_instances(mut self, n: u32) -> RuntimeOptions {
        self.max_instances = n.max(1);
        self
    }

    /// The same with the compiled component cached in `dir`, or not cached (`None`).
    pub fn with_cache_dir(mut self, dir: Option<PathBuf>) -> RuntimeOptions {
        self.cache_dir = dir;
        self
    }

    /// The pool's memory slot size: the cap rounded up to whole wasm pages, at most 4 GiB.
    pub(super) fn slot_bytes(&self) -> u64 {
        (self.max_memory_bytes as u64).div_ceil(65536).saturating_mul(65536).clamp(65536, WASM32_MAX_MEMORY)
    }
}

impl Default for RuntimeOptions {
    /// Sized for the default limits.
    fn default() -> Self {
        RuntimeOptions::for_limits(&Limits::default())
    }
}

/// How instances are allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    /// From the pool: `instances` slots of `slot_bytes` each.
    Pool { instances: u32, slot_bytes: u64 },
    /// On demand (each instance maps its own memory), because the pool could not reserve its
    /// address space; why.
    OnDemand(String),
}

/// The engine's settings apart from the allocator. Everything here that affects compiled code
/// is part of `Engine::precompile_compatibility_hash`, so the compile cache follows it; the
/// pool's size is not, so resizing the pool keeps the cache.
fn base_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // For profiling with `perf`: MAILPLUG_PERF_MAP=1 writes /tmp/perf-PID.map with the names of
    // the component's compiled functions (docs/BENCHMARKS.md); for profiling only.
    if std::env::var_os("MAILPLUG_PERF_MAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

fn pooling(opts: &RuntimeOptions) -> PoolingAllocationConfig {
    let n = opts.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_tables_per_module(2)
        .table_elements(TABLE_ELEMENTS)
        // One fiber stack per store at a time: each instance has its own store.
        .total_stacks(n)
        .max_memory_size(usize::try_from(opts.slot_bytes()).unwrap_or(usize::MAX));
    pool
}

/// The engine for `opts`: pooled, or on demand when the pool cannot reserve its address space
/// (a process limit such as `ulimit -v`), which is slower to instantiate but otherwise the same.
pub(super) fn engine(opts: &RuntimeOptions) -> Result<(Engine, Allocation), HostError> {
    if !opts.pooled {
        let engine = Engine::new(&base_config()).map_err(|e| HostError::Plugin(format!("wasmtime: {e}")))?;
        return Ok((engine, Allocation::OnDemand("the runtime options ask for no pool".into())));
    }
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(opts)));
    match Engine::new(&config) {
        Ok(engine) => Ok((engine, Allocation::Pool { instances: opts.max_instances.max(1), slot_bytes: opts.slot_bytes() })),
        Err(pool_error) => {
            let engine = Engine::new(&base_config()).map_err(|e| HostError::Plugin(format!("wasmtime: {e}")))?;
            Ok((engine, Allocation::OnDemand(super::first_line(&format!("{pool_error:#}")).to_string())))
        }
    }
}

/// Whether a wasmtime error says every slot of a kind is taken.
pub(super) fn is_pool_exhausted(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_sized_from_the_larger_memory_limit() {
        let limits = Limits { guest_memory_mb: 64, parse_memory_mb: 300, ..Limits::default() };
        let o = RuntimeOptions::for_limits(&limits);
        assert_eq!(o.max_memory_bytes, 300 << 20);
        assert_eq!(o.slot_bytes(), 300 << 20);
        assert_eq!(o.max_instances, CLI_INSTANCES);
        let huge = RuntimeOptions { max_memory_bytes: usize::MAX, ..o.clone() };
        assert_eq!(huge.slot_bytes(), 4 << 30, "a wasm32 memory is at most 4 GiB");
        let odd = RuntimeOptions { max_memory_bytes: 100_000, ..o };
        assert_eq!(odd.slot_bytes(), 131_072, "whole wasm pages");
    }

    #[test]
    fn resizing_the_pool_keeps_the_engine_compatible() {
        use std::hash::{Hash, Hasher};
        let hash = |opts: &RuntimeOptions| {
            let (engine, allocation) = engine(opts).expect("engine");
            assert!(matches!(allocation, Allocation::Pool { .. }), "{allocation:?}");
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        let small = RuntimeOptions::default().with_instances(2).with_cache_dir(None);
        let big = RuntimeOptions { max_memory_bytes: 1 << 30, ..small.clone() }.with_instances(64);
        assert_eq!(hash(&small), hash(&big), "one cache entry serves every pool size");
        let (on_demand, _) = engine(&RuntimeOptions { pooled: false, ..small.clone() }).expect("engine");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        on_demand.precompile_compatibility_hash().hash(&mut h);
        assert_eq!(h.finish(), hash(&small), "nor does the allocator");
    }
}
