//! Loading the mailplug component with wasmtime and calling into it, with per-tenant memory
//! and CPU limits. This is the only place that knows about wasmtime.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::error::HostError;

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
    ComposedMessage, Draft, FromPlan, Identity, OutgoingAttachment, Permission as GuestPermission,
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
    Action, CheckSummary, Event, FetchSummary, FetchedMessage as RawMessage, FolderCount, Outcome, RecipientResult,
    SendReport, SkippedMessage, Step, StepReport,
};
pub use exports::mailplug::connector::parse::{Address, Attachment, Classification, ParsedMessage};
pub use parse_calls::{FetchedMessage, ParseBudget};
pub use exports::mailplug::connector::session::SavedCopy;
pub use exports::mailplug::connector::session::{BatchReport, Delivery, MessageResult};
pub use exports::mailplug::connector::types::{
    BasicCredentials, Credentials, Error as GuestError, ErrorDetail, Limits as GuestLimits, Oauth2Credentials, Oauth2Mechanism,
    RetryAdvice, Security as GuestSecurity, Server as GuestServer, ServerReply, Stage,
};

/// One epoch tick; CPU budgets are counted in these.
const TICK: Duration = Duration::from_millis(10);

/// The compiled component and the engine, shared by all tenants of a host.
pub struct Plugin {
    /// The component linked with WASI, ready to instantiate (cheap to clone).
    pre: ConnectorPre<GuestState>,
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
    limits: TenantLimiter,
}

/// Caps the guest's memory and remembers when it refused a growth, so a trap that follows can
/// be explained as the tenant's memory limit rather than a crash.
struct TenantLimiter {
    max_memory: usize,
    refused: bool,
}

impl ResourceLimiter for TenantLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
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
        Ok(Plugin { pre, ticker_stop })
    }

    /// A fresh, isolated instance for one tenant operation, with its own memory and CPU caps.
    /// Messages it delivers are parsed in a second instance with `ParseBudget::default()`
    /// unless `Instance::set_parse_budget` says otherwise.
    pub async fn instantiate(&self, memory_bytes: usize, cpu_ms_per_call: u32) -> Result<Instance, HostError> {
        let (mut store, ticks) = new_store(&self.pre, memory_bytes, cpu_ms_per_call);
        let bindings = match self.pre.instantiate_async(&mut store).await {
            Ok(b) => b,
            Err(e) if store.data().limits.refused => {
                return Err(HostError::Plugin(format!(
                    "the mail component needs more memory than the tenant's limit of {} MB just to start; raise limits.guest_memory_mb ({e})",
                    memory_bytes >> 20
                )))
            }
            Err(e) => return Err(HostError::Plugin(format!("the component does not instantiate: {e}"))),
        };
        let parser = parse_calls::Parser::new(self.pre.clone(), ParseBudget::default());
        Ok(Instance { store, bindings, ticks, memory_bytes, parser })
    }
}

/// A store with no files, no network and no inherited stdio, its memory capped at
/// `memory_bytes`, and the epoch ticks that make up `cpu_ms_per_call`.
fn new_store(pre: &ConnectorPre<GuestState>, memory_bytes: usize, cpu_ms_per_call: u32) -> (Store<GuestState>, u64) {
    let limits = TenantLimiter { max_memory: memory_bytes, refused: false };
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

/// What made a call trap.
enum TrapKind {
    /// The memory cap refused a growth.
    Memory,
    /// The CPU budget of the call ran out.
    Cpu,
    /// Anything else (a bug): the trap's first line, never guest data.
    Crash(String),
}

fn explain_trap_kind(e: &wasmtime::Error, memory_refused: bool) -> TrapKind {
    if memory_refused {
        TrapKind::Memory
    } else if matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) {
        TrapKind::Cpu
    } else {
        TrapKind::Crash(first_line(&format!("{e:#}")).to_string())
    }
}

/// Explains a trap: a limit (memory, CPU) or a bug; never includes guest data.
fn explain_trap(e: &wasmtime::Error, memory_refused: bool, memory_bytes: usize) -> HostError {
    match explain_trap_kind(e, memory_refused) {
        TrapKind::Memory => HostError::Plugin(format!(
            "the mail component hit the tenant's memory limit of {} MB; raise limits.guest_memory_mb or lower limits.max_message_bytes",
            memory_bytes >> 20
        )),
        TrapKind::Cpu => HostError::Plugin(
            "the mail component used more CPU time in one step than the tenant's limit allows; raise limits.guest_cpu_ms_per_call".into(),
        ),
        TrapKind::Crash(text) => HostError::Plugin(format!("the mail component stopped unexpectedly: {text}")),
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
        explain_trap(&e, self.store.data().limits.refused, self.memory_bytes)
    }

    pub async fn open_inbound(
        &mut self,
        mailbox: &GuestMailbox,
        sync_state: Option<&[u8]>,
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_inbound()
            .call_open(&mut self.store, mailbox, sync_state, now).await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    pub async fn compose(&mut self, draft: &Draft) -> Result<ComposedMessage, HostError> {
        self.arm();
        let r = self.bindings.mailplug_connector_outbound().call_compose(&mut self.store, draft).await.map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }

    pub async fn plan_from(&mut self, identity: &Identity) -> Result<FromPlan, HostError> {
        self.arm();
        let r = self.bindings.mailplug_connector_outbound().call_plan_from(&mut self.store, identity).await.map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }

    pub async fn compose_reply(&mut self, draft: &ReplyDraft) -> Result<ComposedMessage, HostError> {
        self.arm();
        let r = self.bindings.mailplug_connector_outbound().call_compose_reply(&mut self.store, draft).await.map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }

    pub async fn presets(&mut self) -> Result<Vec<Preset>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_presets().call_catalogue(&mut self.store).await.map_err(|e| self.trap(e))
    }

    pub async fn preset_by_domain(&mut self, domain: &str) -> Result<Option<Preset>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_presets().call_by_domain(&mut self.store, domain).await.map_err(|e| self.trap(e))
    }

    pub async fn validate(&mut self, settings: &ServerSettings) -> Result<Vec<Finding>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_presets().call_validate(&mut self.store, settings).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_google(&mut self) -> Result<OauthEndpoints, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_google(&mut self.store).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_microsoft(&mut self, tenant: &str) -> Result<Result<OauthEndpoints, OauthFailure>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_microsoft(&mut self.store, tenant).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_begin(
        &mut self,
        e: &OauthEndpoints,
        c: &ClientRegistration,
        login_hint: Option<&str>,
    ) -> Result<Result<AuthorizationRequest, OauthFailure>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_begin(&mut self.store, e, c, login_hint).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_parse_redirect(&mut self, redirect: &str, state: &str) -> Result<Result<String, OauthFailure>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_parse_redirect(&mut self.store, redirect, state).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_token_request(
        &mut self,
        e: &OauthEndpoints,
        c: &ClientRegistration,
        code: &str,
        verifier: &str,
    ) -> Result<HttpRequest, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_token_request(&mut self.store, e, c, code, verifier).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_refresh_request(
        &mut self,
        e: &OauthEndpoints,
        c: &ClientRegistration,
        refresh: &str,
    ) -> Result<HttpRequest, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_refresh_request(&mut self.store, e, c, refresh).await.map_err(|e| self.trap(e))
    }

    pub async fn oauth_parse_token_response(
        &mut self,
        r: &HttpResponse,
        now: u64,
        previous_refresh: Option<&str>,
    ) -> Result<Result<Tokens, OauthFailure>, HostError> {
        self.arm();
        self.bindings
            .mailplug_connector_oauth()
            .call_parse_token_response(&mut self.store, r, now, previous_refresh)
            .await
            .map_err(|e| self.trap(e))
    }

    pub async fn oauth_needs_refresh(&mut self, t: &Tokens, now: u64, margin_ms: u64) -> Result<bool, HostError> {
        self.arm();
        self.bindings.mailplug_connector_oauth().call_needs_refresh(&mut self.store, t, now, margin_ms).await.map_err(|e| self.trap(e))
    }

    pub async fn open_outbound(
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
            .call_open(&mut self.store, submission, envelope_from, envelope_to, message, now).await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// A session that saves a copy of `message` into `folder` of an IMAP mailbox (IMAP APPEND).
    pub async fn open_save_copy(
        &mut self,
        mailbox: &GuestMailbox,
        folder: &str,
        message: &[u8],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_outbound()
            .call_save_copy(&mut self.store, mailbox, folder, message, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// A session that checks a mailbox step by step without fetching or changing anything.
    pub async fn open_check_mailbox(&mut self, mailbox: &GuestMailbox, now: u64) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_check()
            .call_check_mailbox(&mut self.store, mailbox, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// A session that checks an SMTP server up to MAIL FROM / RCPT TO, then resets: nothing is sent.
    pub async fn open_check_submission(
        &mut self,
        submission: &SubmissionServer,
        envelope_from: &str,
        envelope_to: &[String],
        now: u64,
    ) -> Result<SessionHandle, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_check()
            .call_check_submission(&mut self.store, submission, envelope_from, envelope_to, now)
            .await
            .map_err(|e| self.trap(e))?;
        r.map(SessionHandle).map_err(HostError::from)
    }

    /// The cause and the admin's action for an error, in English and German.
    pub async fn explain(&mut self, error: &GuestError) -> Result<Diagnosis, HostError> {
        self.arm();
        self.bindings.mailplug_connector_check().call_explain(&mut self.store, error).await.map_err(|e| self.trap(e))
    }

    /// Gmail app passwords without the spaces Google shows them with; other passwords unchanged.
    pub async fn normalise_app_password(&mut self, password: &str) -> Result<String, HostError> {
        self.arm();
        self.bindings
            .mailplug_connector_presets()
            .call_normalise_app_password(&mut self.store, password)
            .await
            .map_err(|e| self.trap(e))
    }

    pub async fn server(&mut self, s: SessionHandle) -> Result<GuestServer, HostError> {
        self.arm();
        self.bindings.mailplug_connector_session().session().call_server(&mut self.store, s.0).await.map_err(|e| self.trap(e))
    }

    pub async fn handle(&mut self, s: SessionHandle, event: &Event, now: u64) -> Result<Vec<Action>, HostError> {
        self.arm();
        let r = self
            .bindings
            .mailplug_connector_session()
            .session()
            .call_handle(&mut self.store, s.0, event, now).await
            .map_err(|e| self.trap(e))?;
        r.map_err(HostError::from)
    }

    pub async fn deadline(&mut self, s: SessionHandle) -> Result<Option<u64>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_session().session().call_deadline(&mut self.store, s.0).await.map_err(|e| self.trap(e))
    }

    pub async fn sync_state(&mut self, s: SessionHandle) -> Result<Option<Vec<u8>>, HostError> {
        self.arm();
        self.bindings.mailplug_connector_session().session().call_sync_state(&mut self.store, s.0).await.map_err(|e| self.trap(e))
    }

    pub async fn drop_session(&mut self, s: SessionHandle) {
        let _ = s.0.resource_drop_async(&mut self.store).await;
    }
}

// Calls of the `discover` interface (a child module: it needs the store and bindings).
#[path = "engine_discover.rs"]
mod discover_calls;

// Batch submissions (`outbound.open-batch`).
#[path = "batch_calls.rs"]
mod batch_calls;

// Parsing delivered messages in an instance of their own, with their own budget.
#[path = "engine_parse.rs"]
mod parse_calls;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traps_are_explained_as_limits() {
        let interrupt = wasmtime::Error::from(wasmtime::Trap::Interrupt);
        assert!(explain_trap(&interrupt, false, 64 << 20).to_string().contains("CPU time"));
        let unreachable = wasmtime::Error::from(wasmtime::Trap::UnreachableCodeReached);
        let e = explain_trap(&unreachable, true, 64 << 20).to_string();
        assert!(e.contains("memory limit of 64 MB"), "{e}");
        let e = explain_trap(&unreachable, false, 64 << 20).to_string();
        assert!(e.contains("stopped unexpectedly"), "{e}");
    }
}
