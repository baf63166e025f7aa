//! Loading the mailplug component with wasmtime and calling into it, with per-tenant memory
//! and CPU limits. This is the only place that knows about wasmtime.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::error::HostError;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "connector",
});

pub use exports::mailplug::connector::inbound::{Mailbox as GuestMailbox, Protocol as GuestProtocol};
pub use exports::mailplug::connector::outbound::{ComposedMessage, Draft, SubmissionServer};
pub use exports::mailplug::connector::session::{
    Action, Event, FetchSummary, FetchedMessage, Outcome, RecipientResult, SendReport,
};
pub use exports::mailplug::connector::types::{
    BasicCredentials, Credentials, Error as GuestError, ErrorDetail, Limits as GuestLimits, Oauth2Credentials,
    Security as GuestSecurity, Server as GuestServer, ServerReply, Stage,
};

/// One epoch tick; CPU budgets are counted in these.
const TICK: Duration = Duration::from_millis(10);

/// The compiled component and the engine, shared by all tenants of a host.
pub struct Plugin {
    engine: Engine,
    component: Component,
    linker: Linker<GuestState>,
    ticker_stop: Arc<AtomicBool>,
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
    limits: StoreLimits,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl Plugin {
    /// Compiles the component at `path` (a wasm32-wasip2 component).
    pub fn load(path: &Path) -> Result<Plugin, HostError> {
        let bytes = std::fs::read(path)
            .map_err(|e| HostError::Plugin(format!("cannot read the component {}: {e}", path.display())))?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Plugin, HostError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| HostError::Plugin(format!("wasmtime: {e}")))?;
        let component = Component::new(&engine, bytes)
            .map_err(|e| HostError::Plugin(format!("the component does not load: {e}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
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
        Ok(Plugin { engine, component, linker, ticker_stop })
    }

    /// A fresh, isolated instance for one tenant operation, with its own memory and CPU caps.
    pub fn instantiate(&self, memory_bytes: usize, cpu_ms_per_call: u32) -> Result<Instance, HostError> {
        let limits = StoreLimitsBuilder::new().memory_size(memory_bytes).instances(16).tables(64).build();
        let state = GuestState { wasi: WasiCtx::builder().build(), table: ResourceTable::new(), limits };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = u64::from(cpu_ms_per_call).div_ceil(TICK.as_millis() as u64).max(1);
        store.set_epoch_deadline(ticks);
        let bindings = Connector::instantiate(&mut store, &self.component, &self.linker)
            .map_err(|e| HostError::Plugin(format!("the component does not instantiate: {e}")))?;
        Ok(Instance { store, bindings, ticks })
    }
}

/// An instantiated component for one tenant operation.
pub struct Instance {
    store: Store<GuestState>,
    bindings: Connector,
    ticks: u64,
}

/// A session resource inside an instance.
#[derive(Clone, Copy)]
pub struct SessionHandle(ResourceAny);

fn trap(e: wasmtime::Error) -> HostError {
    // A trap is our bug or a limit (memory, CPU); never includes guest data.
    let text = format!("{e:#}");
    if text.contains("epoch") || text.contains("interrupt") {
        HostError::Plugin("the mail component used more CPU time than the tenant's limit allows".into())
    } else if text.contains("memory") || text.contains("grow") {
        HostError::Plugin(format!("the mail component hit the tenant's memory limit: {}", first_line(&text)))
    } else {
        HostError::Plugin(format!("the mail component stopped unexpectedly: {}", first_line(&text)))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl Instance {
    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.ticks);
    }

    pub fn open_inbound(
        &mut self,
        mailbox: &GuestMailbox,
        sync_state: Option<&[u8]>,
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_inbound()
            .call_open(&mut self.store, mailbox, sync_state, now)
            .map_err(trap)?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    pub fn compose(&mut self, draft: &Draft) -> Result<ComposedMessage, HostError> {
        self.arm();
        let r = self.bindings.mailplug_connector_outbound().call_compose(&mut self.store, draft).map_err(trap)?;
        r.map_err(HostError::from)
    }

    pub fn open_outbound(
        &mut self,
        submission: &SubmissionServer,
        envelope_from: &str,
        envelope_to: &[String],
        message: &[u8],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_outbound()
            .call_open(&mut self.store, submission, envelope_from, envelope_to, message, now)
            .map_err(trap)?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    pub fn server(&mut self, s: SessionHandle) -> Result<GuestServer, HostError> {
        self.arm();
        self.bindings.mailplug_connector_session().session().call_server(&mut self.store, s.0).map_err(trap)
    }

    pub fn handle(&mut self, s: SessionHandle, event: &Event, now: u64) -> Result<Vec<Action>, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_session()
            .session()
            .call_handle(&mut self.store, s.0, event, now)
            .map_err(trap)?;
        r.map_err(HostError::from)
    }

    pub fn deadline(&mut self, s: SessionHandle) -> Result<Option<u64>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_session().session().call_deadline(&mut self.store, s.0).map_err(trap)
    }

    pub fn sync_state(&mut self, s: SessionHandle) -> Result<Option<Vec<u8>>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_session().session().call_sync_state(&mut self.store, s.0).map_err(trap)
    }

    pub fn drop_session(&mut self, s: SessionHandle) {
        let _ = s.0.resource_drop(&mut self.store);
    }
}
