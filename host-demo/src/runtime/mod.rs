//! The runtime: loading the mailplug component with wasmtime and calling into it, with
//! per-tenant memory and CPU limits. This folder is the only place that knows about wasmtime.
//!
//! - `mod.rs`: the bindings, `Plugin` (the engine, the linked component) and `Instance` (one
//!   tenant operation's instance in a store of its own), limits and traps;
//! - `calls.rs`: the component's exported functions as `Instance` methods (`discover.rs` for
//!   the discovery interface);
//! - `parse.rs`: the parse instance beside each operation's instance;
//! - `cache.rs`: the compile cache (the compiled component memory-mapped from a file);
//! - `pool.rs`: the engine's configuration and its instance pool, sized by `RuntimeOptions`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Linker, ResourceAny, ResourceTable};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::error::{HostError, Trap};

// Async bindings: WASI's streams (a guest's panic message on stderr, say) are async in
// wasmtime-wasi, and blocking on them inside the host's tokio runtime would panic.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "connector",
    exports: { default: async },
});

pub use exports::mailplug::connector::inbound::{
    AfterFetch as GuestAfterFetch, FirstSync as GuestFirstSync, Mailbox as GuestMailbox, Protocol as GuestProtocol,
};
pub use exports::mailplug::connector::outbound::{
    BatchEnvelope, ComposedMessage, Draft, FromPlan, Identity, OutgoingAttachment, Permission as GuestPermission,
    Provider as GuestProvider, ReplyDraft, SubmissionServer, Text,
};
pub use exports::mailplug::connector::oauth::{
    AuthorizationRequest, ClientRegistration, Endpoints as OauthEndpoints, HttpRequest, HttpResponse, OauthFailure,
    OauthFailureKind, Tokens,
};
pub use exports::mailplug::connector::presets::{
    AuthSupport, Finding, Preset, ProtocolKind, ServerPreset, ServerSettings, Severity, UsernameForm,
};
pub use exports::mailplug::connector::check::Diagnosis;
pub use exports::mailplug::connector::session::{
    Action, CheckSummary, Event, FetchSummary, FetchedMessage as RawMessage, FolderCount, Idling, Outcome, RecipientResult,
    SendReport, SkippedMessage, Step, StepReport,
};
pub use exports::mailplug::connector::parse::{Address, Attachment, Classification};
use exports::mailplug::connector::parse::ParsedMessage as WireParsed;
pub use parse_calls::{FetchedMessage, ParseBudget, ParsedMessage};
pub use exports::mailplug::connector::session::SavedCopy;
pub use exports::mailplug::connector::session::{ArmedWrite, BatchData, BatchReport, CleanBytes, Delivery, MessageBytes, MessageResult};
pub use exports::mailplug::connector::types::{
    BasicCredentials, Credentials, Error as GuestError, ErrorDetail, Limits as GuestLimits, Oauth2Credentials, Oauth2Mechanism,
    RetryAdvice, Security as GuestSecurity, Server as GuestServer, ServerReply, Stage,
};

/// One epoch tick; CPU budgets are counted in these.
const TICK: Duration = Duration::from_millis(10);

/// The compiled component and the engine with its instance pool, shared by all tenants of a
/// host (made once per process).
pub struct Plugin {
    /// The component linked with WASI, ready to instantiate (cheap to clone).
    pre: ConnectorPre<GuestState>,
    ticker_stop: Arc<AtomicBool>,
    allocation: Allocation,
    cache: CacheStatus,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Per-store state: WASI (no files, no network, no inherited stdio) and the memory limiter.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: TenantLimiter,
}

/// Caps the guest's memory and remembers when it refused a growth, so a trap that follows can
/// be explained as the tenant's memory limit rather than a crash.
struct TenantLimiter {
    max_memory: usize,
    refused: bool,
    /// The largest memory size granted so far (the initial memory counts as a growth from 0).
    peak: usize,
}

impl ResourceLimiter for TenantLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.refused = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= pool::TABLE_ELEMENTS)
    }
    fn instances(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl Plugin {
    /// Loads the component at `path` (a wasm32-wasip2 component) with the runtime sized for
    /// the default limits: from the compile cache when it holds this component, otherwise
    /// compiled (and cached).
    pub fn load(path: &Path) -> Result<Plugin, HostError> {
        Self::load_with(path, &RuntimeOptions::default())
    }

    /// Loads the component at `path` with the runtime sized by `opts`.
    /// A stamp in the cache directory lets a later process skip hashing the `.wasm` and the
    /// cache file while neither changed (`cache.rs`, "The fast path").
    pub fn load_with(path: &Path, opts: &RuntimeOptions) -> Result<Plugin, HostError> {
        let (engine, allocation) = pool::engine(opts)?;
        let (component, cache) = cache::component_from_file(&engine, path, opts.cache_dir.as_deref())?;
        Self::link(engine, allocation, component, cache)
    }

    /// The component from its bytes, with the runtime sized for the default limits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Plugin, HostError> {
        Self::from_bytes_with(bytes, &RuntimeOptions::default())
    }

    pub fn from_bytes_with(bytes: &[u8], opts: &RuntimeOptions) -> Result<Plugin, HostError> {
        let (engine, allocation) = pool::engine(opts)?;
        let (component, cache) = cache::component(&engine, bytes, opts.cache_dir.as_deref())?;
        Self::link(engine, allocation, component, cache)
    }

    fn link(engine: wasmtime::Engine, allocation: Allocation, component: wasmtime::component::Component, cache: CacheStatus) -> Result<Plugin, HostError> {
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| HostError::Plugin(format!("wasmtime-wasi: {e}")))?;

        // One background thread advances the epoch; a call that runs past its budget traps.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (e2, stop2) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("mailplug-epoch".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    e2.increment_epoch();
                }
            })
            .map_err(|e| HostError::Plugin(format!("cannot start the epoch thread: {e}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(ConnectorPre::new)
            .map_err(|e| HostError::Plugin(format!("the component does not link: {e}")))?;
        Ok(Plugin { pre, ticker_stop, allocation, cache })
    }

    /// Whether the compiled component came from the cache, was compiled and cached, or why
    /// the cache was not used.
    pub fn cache_status(&self) -> &CacheStatus {
        &self.cache
    }

    /// How instances are allocated: from the pool (its size), or on demand and why.
    pub fn allocation(&self) -> &Allocation {
        &self.allocation
    }

    /// A fresh, isolated instance for one tenant operation, with its own memory and CPU caps.
    /// Messages it delivers are parsed in a second instance with `ParseBudget::default()`
    /// unless `Instance::set_parse_budget` says otherwise.
    pub async fn instantiate(&self, memory_bytes: usize, cpu_ms_per_call: u32) -> Result<Instance, HostError> {
        let (store, bindings, ticks) =
            start(&self.pre, &self.allocation, memory_bytes, cpu_ms_per_call).await.map_err(|f| match f {
                StartFailure::LargerThanSlot(slot) => HostError::Plugin(format!(
                    "the tenant's memory limit of {} MB is larger than this host's instances can have ({} MB): \
                     the host sizes them from the configured limits when it starts; restart it with this configuration, or lower limits.guest_memory_mb",
                    memory_bytes >> 20,
                    slot >> 20
                )),
                StartFailure::Memory(e) => HostError::Plugin(format!(
                    "the mail component needs more memory than the tenant's limit of {} MB just to start; raise limits.guest_memory_mb ({e})",
                    memory_bytes >> 20
                )),
                StartFailure::PoolFull(n) => pool_full(n),
                StartFailure::Other(e) => HostError::Plugin(format!("the component does not instantiate: {e}")),
            })?;
        let parser = parse_calls::Parser::new(self.pre.clone(), self.allocation.clone(), ParseBudget::default());
        Ok(Instance { store, bindings, ticks, memory_bytes, parser })
    }
}

/// Every slot of the pool is taken.
fn pool_full(n: u32) -> HostError {
    HostError::PoolFull(n)
}

/// Why an instance could not be made.
enum StartFailure {
    /// The memory cap asked for is larger than a pool slot (its size in bytes).
    LargerThanSlot(u64),
    /// The memory cap refused the component's initial memory.
    Memory(wasmtime::Error),
    /// Every slot of the pool (this many) is taken.
    PoolFull(u32),
    Other(wasmtime::Error),
}

/// A fresh instance in a store of its own (see `new_store`), from the pool when there is one.
async fn start(
    pre: &ConnectorPre<GuestState>,
    allocation: &Allocation,
    memory_bytes: usize,
    cpu_ms: u32,
) -> Result<(Store<GuestState>, Connector, u64), StartFailure> {
    if let Allocation::Pool { slot_bytes, .. } = allocation {
        if memory_bytes as u64 > *slot_bytes && *slot_bytes < 4 << 30 {
            return Err(StartFailure::LargerThanSlot(*slot_bytes));
        }
    }
    let (mut store, ticks) = new_store(pre, memory_bytes, cpu_ms);
    match pre.instantiate_async(&mut store).await {
        Ok(bindings) => Ok((store, bindings, ticks)),
        Err(e) if store.data().limits.refused => Err(StartFailure::Memory(e)),
        Err(e) if pool::is_pool_exhausted(&e) => match allocation {
            Allocation::Pool { instances, .. } => Err(StartFailure::PoolFull(*instances)),
            Allocation::OnDemand(_) => Err(StartFailure::Other(e)),
        },
        Err(e) => Err(StartFailure::Other(e)),
    }
}

/// A store with no files, no network and no inherited stdio, its memory capped at
/// `memory_bytes`, and the epoch ticks that make up `cpu_ms_per_call`.
fn new_store(pre: &ConnectorPre<GuestState>, memory_bytes: usize, cpu_ms_per_call: u32) -> (Store<GuestState>, u64) {
    let limits = TenantLimiter { max_memory: memory_bytes, refused: false, peak: 0 };
    let state = GuestState { wasi: WasiCtx::builder().build(), table: ResourceTable::new(), limits };
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|s| &mut s.limits);
    let ticks = u64::from(cpu_ms_per_call).div_ceil(TICK.as_millis() as u64).max(1);
    store.set_epoch_deadline(ticks);
    (store, ticks)
}

/// An instantiated component for one tenant operation.
pub struct Instance {
    store: Store<GuestState>,
    bindings: Connector,
    ticks: u64,
    memory_bytes: usize,
    /// Where delivered messages are parsed: another instance, made on first use.
    parser: parse_calls::Parser,
}

/// A session resource inside an instance.
#[derive(Clone, Copy)]
pub struct SessionHandle(ResourceAny);

/// What made a call trap: the memory cap of `memory_bytes` refused a growth, the CPU budget
/// ran out, or anything else (a bug: the trap's first line, never guest data).
fn trap_of(e: &wasmtime::Error, memory_refused: bool, memory_bytes: usize) -> Trap {
    if memory_refused {
        Trap::Memory { limit_bytes: memory_bytes }
    } else if matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) {
        Trap::Cpu
    } else {
        Trap::Crash(first_line(&format!("{e:#}")).to_string())
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl Instance {
    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.ticks);
    }

    fn trap(&self, e: wasmtime::Error) -> HostError {
        HostError::Trap(trap_of(&e, self.store.data().limits.refused, self.memory_bytes))
    }

    /// The largest linear memory the guest has had in this instance, in bytes: a fresh
    /// instance has only its initial memory, whatever earlier instances used.
    pub fn memory_peak_bytes(&self) -> usize {
        self.store.data().limits.peak
    }
}

/// One call of an exported function: arms the CPU budget, calls `$method` of the interface
/// `$iface` (and its resource `$sub`, for the session's methods) with the instance's store and
/// `$arg`s, and turns a trap into the host's typed error (`Instance::trap`). The value is the
/// guest's answer (often itself a `Result` with the guest's error).
macro_rules! call {
    ($self:ident, $iface:ident $(. $sub:ident)?, $method:ident($($arg:expr),* $(,)?)) => {{
        $self.arm();
        $self.bindings.$iface()$(.$sub())?.$method(&mut $self.store, $($arg),*).await.map_err(|e| $self.trap(e))
    }};
}

mod cache;
mod calls;
pub mod driver;
pub mod http;
pub mod net;
// Calls of the `discover` interface (a child module: it needs the store and bindings).
#[path = "discover.rs"]
mod discover_calls;
// Parsing delivered messages in an instance of their own, with their own budget.
#[path = "parse.rs"]
mod parse_calls;
mod pool;

pub use cache::{default_dir as default_cache_dir, CacheStatus};
pub use pool::{Allocation, RuntimeOptions, CLI_INSTANCES};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traps_are_typed_and_explained_as_limits() {
        let interrupt = wasmtime::Error::from(wasmtime::Trap::Interrupt);
        let e = HostError::Trap(trap_of(&interrupt, false, 64 << 20));
        assert!(matches!(e, HostError::Trap(Trap::Cpu)), "{e:?}");
        assert!(e.to_string().contains("CPU time"), "{e}");
        let why = Trap::Cpu.explanation();
        assert_eq!(why.en, e.to_string());
        assert!(why.de.contains("Rechenzeit") && why.de.contains("limits.guest_cpu_ms_per_call"), "{}", why.de);
        assert!(Trap::Memory { limit_bytes: 64 << 20 }.explanation().de.contains("Speichergrenze dieses Mandanten von 64 MB"));
        let unreachable = wasmtime::Error::from(wasmtime::Trap::UnreachableCodeReached);
        let e = HostError::Trap(trap_of(&unreachable, true, 64 << 20));
        assert!(matches!(e, HostError::Trap(Trap::Memory { limit_bytes }) if limit_bytes == 64 << 20), "{e:?}");
        assert!(e.to_string().contains("memory limit of 64 MB"), "{e}");
        let e = trap_of(&unreachable, false, 64 << 20);
        assert!(matches!(e, Trap::Crash(_)), "{e:?}");
        assert!(e.to_string().starts_with("the mail component stopped unexpectedly"), "{e}");
    }

    #[test]
    fn a_full_pool_is_its_own_error() {
        let e = pool_full(3);
        assert!(matches!(e, HostError::PoolFull(3)), "{e:?}");
        assert!(e.to_string().starts_with("all 3 component instances this host allows at once are in use"), "{e}");
    }
}
