//! The tenants folder: every `*.toml` file in it is a tenant, validated like the CLI's
//! configuration (parsing, licence, the component's checks of each server). The folder is
//! scanned every `rescan` (2 s), each file judged by its bytes and the secrets it names
//! (`fingerprint`): a new file starts its tenant's actors; a changed one stops them
//! after the operation in progress, then starts them with the new version; a removed one
//! stops them. A file that does not validate is reported (log, API, metric) and skipped; when
//! a good version of it runs, that one keeps running.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::scheduler::MailboxActor;
use super::state::{now_ms, InvalidFile, MailboxState, Phase, QueueState, TenantState};
use super::Shared;
use crate::config::{Protocol, TenantConfig};

/// The largest tenant file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A tenant's running actors.
struct Runner {
    token: CancellationToken,
    tracker: TaskTracker,
    file: PathBuf,
}

/// What was last seen of a file.
struct Seen {
    hash: String,
    /// The tenant this file runs (its last good version), if any.
    tenant: Option<String>,
}

/// The tenants folder and the tenants it runs.
pub struct Tenants {
    shared: Arc<Shared>,
    files: HashMap<PathBuf, Seen>,
    runners: HashMap<String, Runner>,
}

impl Tenants {
    pub fn new(shared: Arc<Shared>) -> Tenants {
        Tenants { shared, files: HashMap::new(), runners: HashMap::new() }
    }

    /// Scans now, then every `rescan`, until the service stops.
    pub async fn run(mut self) {
        let stop = self.shared.root.clone();
        loop {
            self.scan().await;
            self.shared.board.write(|b| b.loaded = true);
            tokio::select! {
                _ = tokio::time::sleep(self.shared.options.rescan) => {}
                _ = stop.cancelled() => break,
            }
        }
    }

    /// One pass over the folder.
    pub async fn scan(&mut self) {
        let dir = self.shared.options.tenants.clone();
        let mut present: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
        let mut unreadable = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_none_or(|e| e != "toml") || !path.is_file() {
                        continue;
                    }
                    match read_capped(&path) {
                        Ok(bytes) => {
                            present.insert(path, bytes);
                        }
                        // Gone between listing and reading, or unreadable: judged at the next scan.
                        Err(e) => {
                            warn!(file = %path.display(), error = %e, "cannot read the tenant file");
                            unreadable.push(path);
                        }
                    }
                }
            }
            Err(e) => {
                error!(dir = %dir.display(), error = %e, "cannot read the tenants folder; the tenants keep running as they are");
                return;
            }
        }
        let gone: Vec<PathBuf> = self.files.keys().filter(|p| !present.contains_key(*p) && !unreadable.contains(*p)).cloned().collect();
        for path in gone {
            if let Some(seen) = self.files.remove(&path) {
                if let Some(t) = seen.tenant {
                    info!(tenant = %t, file = %path.display(), "tenant file removed; stopping the tenant");
                    self.stop(&t);
                }
            }
            self.shared.board.write(|b| b.invalid.remove(&path.display().to_string()));
        }
        for (path, bytes) in present {
            let hash = fingerprint(&path, &bytes);
            if self.files.get(&path).is_some_and(|s| s.hash == hash) {
                continue;
            }
            let previous = self.files.get(&path).and_then(|s| s.tenant.clone());
            match self.validate(&path, &bytes, previous.as_deref()).await {
                Ok(cfg) => {
                    if let Some(old) = previous.as_deref().filter(|old| *old != cfg.tenant) {
                        self.stop(old);
                    }
                    let id = cfg.tenant.clone();
                    info!(tenant = %id, file = %path.display(), "tenant loaded");
                    self.start(cfg, &path);
                    self.shared.board.write(|b| b.invalid.remove(&path.display().to_string()));
                    self.files.insert(path, Seen { hash, tenant: Some(id) });
                }
                Err(message) => {
                    let file = path.display().to_string();
                    match &previous {
                        Some(t) => {
                            error!(tenant = %t, file = %file, error = %message.replace('\n', " "), "the changed tenant file is invalid; the previous version keeps running");
                            self.shared.board.write(|b| {
                                if let Some(ts) = b.tenants.get_mut(t) {
                                    ts.status = "running-previous";
                                    ts.config_error = Some(message.clone());
                                }
                            });
                        }
                        None => {
                            error!(file = %file, error = %message.replace('\n', " "), "the tenant file is invalid; it is skipped");
                            let entry = InvalidFile { file: file.clone(), status: "invalid", error: message, at_ms: now_ms() };
                            self.shared.board.write(|b| b.invalid.insert(file, entry));
                        }
                    }
                    self.files.insert(path, Seen { hash, tenant: previous });
                }
            }
        }
    }

    /// The file's configuration, checked as `mailplug fetch` checks it: parsed and validated,
    /// licensed, and without an error in the component's checks of its servers.
    async fn validate(&self, path: &Path, bytes: &[u8], previous: Option<&str>) -> Result<TenantConfig, String> {
        let file = path.display().to_string();
        let text = std::str::from_utf8(bytes).map_err(|_| format!("configuration {file}: the file is not UTF-8 text"))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let cfg = TenantConfig::parse(text, &file, &base, &|name| std::env::var(name).ok()).map_err(|e| e.to_string())?;
        if !cfg.licensed {
            return Err(crate::HostError::Unlicensed(cfg.tenant.clone()).to_string());
        }
        if let Some(r) = self.runners.get(&cfg.tenant).filter(|r| r.file != path && previous != Some(cfg.tenant.as_str())) {
            return Err(format!(
                "configuration {file}: tenant \"{}\" is already run from {}; each tenant needs its own `tenant` id",
                cfg.tenant,
                r.file.display()
            ));
        }
        let findings = crate::ops::validate_config(&self.shared.plugin, &cfg).await.map_err(|e| e.to_string())?;
        if let Some(f) = findings.iter().find(|f| f.error) {
            return Err(format!("configuration {file}: {} ({}): {}", f.server, f.field, f.en));
        }
        for f in findings.iter().filter(|f| !f.error) {
            warn!(tenant = %cfg.tenant, server = %f.server, field = %f.field, "{}", f.en);
        }
        Ok(cfg)
    }

    /// Starts (or restarts) a tenant: its state on the board now, its actors once the previous
    /// version's actors have finished what they were doing.
    fn start(&mut self, cfg: TenantConfig, path: &Path) {
        let id = cfg.tenant.clone();
        let old = self.runners.remove(&id).map(|o| {
            o.token.cancel();
            o.tracker.close();
            o.tracker
        });
        let token = self.shared.root.child_token();
        let tracker = TaskTracker::new();
        let mailboxes = cfg
            .mailboxes
            .iter()
            .map(|m| {
                let state = MailboxState {
                    name: m.name.clone(),
                    protocol: if m.protocol == Protocol::Pop3 { "pop3" } else { "imap" },
                    poll_interval_secs: m.poll_interval_secs,
                    phase: if self.shared.leases.is_some() { Phase::Elsewhere } else { Phase::Connecting },
                    last_error: None,
                    last_success_ms: None,
                    runs: 0,
                    errors: 0,
                    fetched: 0,
                    bytes: 0,
                    node: None,
                };
                (m.name.clone(), state)
            })
            .collect();
        let queues = cfg.queues.iter().map(|q| QueueState { name: q.name.clone(), mailboxes: q.mailboxes.clone() }).collect();
        let state = TenantState {
            tenant: id.clone(),
            file: path.display().to_string(),
            status: "running",
            config_error: None,
            loaded_at_ms: now_ms(),
            mailboxes,
            queues,
            api_token: cfg.api_token.clone(),
            config: Arc::new(cfg.clone()),
        };
        let removed: Vec<String> = self.shared.board.write(|b| {
            let removed = b
                .tenants
                .get(&id)
                .map(|t| t.mailboxes.keys().filter(|k| !state.mailboxes.contains_key(*k)).cloned().collect())
                .unwrap_or_default();
            b.tenants.insert(id.clone(), state);
            removed
        });
        self.shared.metrics.forget_tenant(&id, &removed);
        if let Some(leases) = &self.shared.leases {
            // With leases the claimer runs the actors of what this node holds.
            leases.wake.notify_one();
            self.runners.insert(id, Runner { token, tracker, file: path.to_path_buf() });
            drop(old);
            return;
        }
        super::events::set_webhook(&self.shared, &id, super::webhook::Target::of(&cfg));
        let cfg = Arc::new(cfg);
        let slots = Arc::new(Semaphore::new(self.shared.options.max_per_tenant.max(1)));
        let (shared, t2, tok) = (self.shared.clone(), tracker.clone(), token.clone());
        let starter = async move {
            if let Some(old) = old {
                old.wait().await;
            }
            if tok.is_cancelled() {
                return;
            }
            for m in &cfg.mailboxes {
                let actor = MailboxActor {
                    shared: shared.clone(),
                    cfg: cfg.clone(),
                    mailbox: m.name.clone(),
                    cancel: tok.clone(),
                    tenant_slots: slots.clone(),
                    fence: None,
                };
                tokio::task::spawn_local(t2.track_future(shared.all.track_future(actor.run())));
            }
            for q in &cfg.queues {
                let actor = super::outbox::QueueActor {
                    shared: shared.clone(),
                    cfg: cfg.clone(),
                    queue: q.name.clone(),
                    cancel: tok.clone(),
                    tenant_slots: slots.clone(),
                    fence: None,
                };
                tokio::task::spawn_local(t2.track_future(shared.all.track_future(actor.run())));
            }
        };
        tokio::task::spawn_local(tracker.track_future(self.shared.all.track_future(starter)));
        self.runners.insert(id, Runner { token, tracker, file: path.to_path_buf() });
    }

    /// Stops a tenant: its actors end after the operation in progress; its state leaves the board.
    fn stop(&mut self, id: &str) {
        if let Some(r) = self.runners.remove(id) {
            r.token.cancel();
            r.tracker.close();
        }
        if let Some(leases) = &self.shared.leases {
            // The claimer gives its leases up.
            leases.wake.notify_one();
        } else {
            super::events::set_webhook(&self.shared, id, None);
        }
        self.shared.metrics.forget_outbox(id);
        let mailboxes: Vec<String> =
            self.shared.board.write(|b| b.tenants.remove(id).map(|t| t.mailboxes.into_keys().collect()).unwrap_or_default());
        self.shared.metrics.forget_tenant(id, &mailboxes);
    }
}

/// What decides whether a file changed: its bytes and the secrets it names (a password file
/// fixed after a rejected login restarts the tenant although the tenant file is the same).
/// Only a SHA-256 of them is kept.
fn fingerprint(path: &Path, bytes: &[u8]) -> String {
    let mut all = bytes.to_vec();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let text = String::from_utf8_lossy(bytes);
    if let Ok(cfg) = TenantConfig::parse(&text, &path.display().to_string(), &base, &|name| std::env::var(name).ok()) {
        let secrets = cfg
            .mailboxes
            .iter()
            .map(|m| &m.server.secret)
            .chain(cfg.queues.iter().map(|q| &q.smtp.secret))
            .chain(cfg.oauth_clients.iter().filter_map(|c| c.client_secret.as_ref()))
            .chain(cfg.api_token.as_ref());
        for s in secrets {
            all.push(0);
            all.extend_from_slice(s.expose().as_bytes());
        }
    }
    let hash = crate::db::content_hash(&all);
    zeroize::Zeroize::zeroize(&mut all);
    hash
}

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}
