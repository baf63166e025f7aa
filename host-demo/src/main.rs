//! `mailplug`: the demo host's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mailplug_host::driver::MessageSink;
use mailplug_host::engine::FetchedMessage;
use mailplug_host::ops::{self, Outgoing};
use mailplug_host::db::{Database, DbSink};
use mailplug_host::engine::SkippedMessage;
use mailplug_host::store::EmlDir;
use std::io::IsTerminal;
use mailplug_host::{HostError, Plugin, TenantConfig};

#[derive(Parser)]
#[command(name = "mailplug", version, about = "Fetch and send a tenant's mail through the mailplug component")]
struct Cli {
    /// The mailplug component (.wasm). Default: $MAILPLUG_WASM, else the release build next to this binary.
    #[arg(long, global = true)]
    plugin: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch new mail of one or all inbound mailboxes into the tenant's database.
    Fetch {
        #[arg(long)]
        config: PathBuf,
        /// Only this mailbox (default: all).
        #[arg(long)]
        mailbox: Option<String>,
        /// Also write each new message as a .eml file here (one subfolder per mailbox).
        #[arg(long)]
        out: Option<PathBuf>,
        /// One JSON object per message instead of a text line.
        #[arg(long)]
        json: bool,
    },
    /// Send a message, or a reply to a stored message, through a queue's SMTP server.
    Send {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        queue: String,
        /// Recipient; repeat for several (not with --reply-to-message: the reply goes to the original's sender).
        #[arg(long, required_unless_present = "reply_to_message", conflicts_with = "reply_to_message")]
        to: Vec<String>,
        #[arg(long, required_unless_present = "reply_to_message", conflicts_with = "reply_to_message")]
        subject: Option<String>,
        #[arg(long, conflicts_with = "body_file", required_unless_present = "body_file")]
        body: Option<String>,
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// Reply to this stored message (its database id, server id or Message-ID), threaded, with
        /// the sender planned for the mailbox it arrived in.
        #[arg(long)]
        reply_to_message: Option<String>,
        /// Optional HTML body for a reply.
        #[arg(long, requires = "reply_to_message")]
        html_file: Option<PathBuf>,
        /// Reply even to an auto-reply, bulk mail or bounce.
        #[arg(long, requires = "reply_to_message")]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Suggest a tenant-configuration snippet for an address: from the preset catalogue, else
    /// by the domain's MX, RFC 6186/8314 SRV records and Thunderbird autoconfig (suggestions to
    /// confirm unless they are catalogue servers).
    Discover {
        address: String,
        #[arg(long)]
        json: bool,
        /// Ask this DNS server (IP:PORT) instead of the system's resolver.
        #[arg(long, value_name = "IP:PORT")]
        dns: Option<std::net::SocketAddr>,
        /// Extra CA certificates (PEM) trusted for the autoconfig HTTPS fetches.
        #[arg(long, value_name = "FILE")]
        extra_ca: Option<PathBuf>,
        /// Test rigs only: fetch autoconfig from loopback addresses too.
        #[arg(long, hide = true)]
        allow_loopback: bool,
        /// Longest wait for each DNS answer or HTTPS fetch, in seconds (all together: 3x).
        #[arg(long, default_value_t = 5, value_name = "SECS")]
        timeout: u64,
    },
    /// List the provider presets (recommended settings), or check a configuration against them.
    Presets {
        /// Check this configuration's servers instead of listing the presets.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// OAuth2: consent once in a browser, and check the stored tokens.
    Oauth {
        #[command(subcommand)]
        command: OauthCommand,
    },
    /// Test the connection of mailboxes and queues step by step (resolve, connect, TLS, greeting,
    /// capabilities, STARTTLS, mechanisms, login, folders / a MAIL FROM + RCPT TO probe that is
    /// reset), stopping at the first failure with its cause and what to do. Changes nothing.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Only this mailbox.
        #[arg(long, conflicts_with = "queue")]
        mailbox: Option<String>,
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// The RCPT TO of the SMTP probe (default: the queue's own sender address). Nothing is sent.
        #[arg(long)]
        probe_to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the From, Sender, Reply-To and MAIL FROM that replies from a queue to a mailbox's
    /// mail will use, and what the customer will see, without sending anything.
    PlanFrom {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        queue: String,
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OauthCommand {
    /// Print (and try to open) the authorization URL, receive the redirect on the loopback
    /// redirect URI, exchange the code and store the tokens.
    Login {
        #[arg(long)]
        config: PathBuf,
        /// The inbound mailbox whose account to authorize.
        #[arg(long, conflicts_with = "queue", required_unless_present = "queue")]
        mailbox: Option<String>,
        /// The queue whose SMTP account to authorize.
        #[arg(long)]
        queue: Option<String>,
        /// Seconds to wait for the browser to come back.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Show each OAuth2 account's scopes, expiry and health (never the tokens).
    Status {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Stores each delivered message in the database (and as .eml with --out), prints a line per
/// message, and shows progress on a terminal.
struct CliSink<'a> {
    mailbox: String,
    db: DbSink<'a>,
    eml: Option<EmlDir>,
    json: bool,
    progress: bool,
    /// What to print for each delivery, once its commit says whether it was new.
    pending: Vec<Line>,
}

/// The summary of one delivered message.
struct Line {
    id: String,
    bytes: usize,
    from: String,
    subject: String,
    kind: String,
    parse_error: Option<String>,
    file: Option<String>,
}

/// The value of a header in the raw message, unfolded, for the summary line only.
fn header(raw: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(64 * 1024)]);
    let mut value: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => {
                v.push(' ');
                v.push_str(line.trim());
            }
            Some(_) => break,
            None => {
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case(name) {
                        value = Some(v.trim().to_string());
                    }
                }
            }
        }
    }
    value.unwrap_or_default()
}

impl MessageSink for CliSink<'_> {
    fn deliver(&mut self, m: FetchedMessage) -> Result<(), HostError> {
        let (kind, parse_error) = match &m.parsed {
            Ok(p) => (mailplug_host::db::classification_name(p.classification).to_string(), None),
            Err(e) => ("unparsed".to_string(), Some(e.clone())),
        };
        let file = match &mut self.eml {
            Some(eml) => {
                eml.deliver(m.clone())?;
                eml.written.last().map(|p| p.display().to_string())
            }
            None => None,
        };
        self.pending.push(Line {
            id: m.id.clone(),
            bytes: m.raw.len(),
            from: header(&m.raw, "From"),
            subject: header(&m.raw, "Subject"),
            kind,
            parse_error,
            file,
        });
        self.db.deliver(m)?;
        if self.progress {
            eprint!("\r\x1b[K{}: {} received, {:.1} MB", self.mailbox, self.pending.len() as u32 + self.db.stats.stored + self.db.stats.duplicates, self.db.stats.bytes as f64 / 1e6);
        }
        Ok(())
    }
    fn skipped(&mut self, n: SkippedMessage) -> Result<(), HostError> {
        if self.progress {
            eprint!("\r\x1b[K");
        }
        eprintln!("mailplug: {}: skipped {} ({} bytes): {}", self.mailbox, n.id, n.size, n.reason);
        self.db.skipped(n)
    }
    fn commit(&mut self) -> Result<(), HostError> {
        if let Some(eml) = &mut self.eml {
            eml.commit()?;
        }
        self.db.commit()?;
        if self.progress {
            eprint!("\r\x1b[K");
        }
        let new: std::collections::HashMap<&str, bool> = self.db.results.iter().map(|(id, n)| (id.as_str(), *n)).collect();
        for l in self.pending.drain(..) {
            let duplicate = !new.get(l.id.as_str()).copied().unwrap_or(false);
            if self.json {
                let v = serde_json::json!({
                    "mailbox": self.mailbox, "id": l.id, "bytes": l.bytes, "from": l.from, "subject": l.subject,
                    "classification": l.kind, "parse_error": l.parse_error, "duplicate": duplicate, "file": l.file,
                });
                println!("{v}");
            } else {
                let dup = if duplicate { "\t(already stored)" } else { "" };
                println!("{}\t{}\t{} bytes\t{}\tFrom: {}\tSubject: {}{dup}", self.mailbox, l.id, l.bytes, l.kind, l.from, l.subject);
            }
        }
        Ok(())
    }
}

async fn oauth_command(plugin: &Plugin, cfg: &TenantConfig, command: OauthCommand) -> ExitCode {
    use mailplug_host::oauth::{self, Target};
    use mailplug_host::store::SyncStateStore;
    let db = match Database::open(&cfg.database) {
        Ok(db) => db,
        Err(e) => return fail(e, 1),
    };
    match command {
        OauthCommand::Login { mailbox, queue, timeout, .. } => {
            let target = match (mailbox, queue) {
                (Some(m), _) => Target::Mailbox(m),
                (None, Some(q)) => Target::Queue(q),
                (None, None) => return fail("give --mailbox or --queue", 2),
            };
            let redirect_uri = match oauth::resolve(cfg, &target) {
                Ok((_, c)) => c.redirect_uri.clone(),
                Err(e) => return fail(e, 2),
            };
            let mut instance = match plugin.instantiate(64 << 20, 2000).await {
                Ok(i) => i,
                Err(e) => return fail(e, 1),
            };
            // Before the consent: tokens that cannot be stored would be lost.
            if let Err(e) = db.token_storage_ready() {
                return fail(e, 2);
            }
            // Listening before the URL is shown: a browser that comes back at once finds it.
            let receiver = match oauth::LoopbackReceiver::bind(&redirect_uri).await {
                Ok(r) => r,
                Err(e) => return fail(e, 1),
            };
            let started = match oauth::begin_login(&mut instance, cfg, &target).await {
                Ok(s) => s,
                Err(e) => return fail(e, 1),
            };
            eprintln!("mailplug: open this URL in a browser and consent (waiting on {redirect_uri}):");
            println!("{}", started.url);
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let _ = std::process::Command::new("xdg-open")
                .arg(&started.url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            let redirect = match receiver.receive(std::time::Duration::from_secs(timeout)).await {
                Ok(r) => r,
                Err(e) => return fail(e, 1),
            };
            match oauth::finish_login(&mut instance, cfg, &db, &target, &started, &redirect).await {
                Ok(t) => {
                    eprintln!(
                        "mailplug: tokens stored for {} (scopes: {})",
                        t.account.as_deref().unwrap_or("the account"),
                        if t.scopes.is_empty() { "as granted".to_string() } else { t.scopes.join(" ") }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, 1),
            }
        }
        OauthCommand::Status { json, .. } => {
            let now = mailplug_host::driver::now_ms();
            let servers = cfg
                .mailboxes
                .iter()
                .map(|m| (format!("mailbox {}", m.name), &m.server))
                .chain(cfg.queues.iter().map(|q| (format!("queue {}", q.name), &q.smtp)));
            let mut any = false;
            for (what, server) in servers {
                let Ok(client) = oauth::client_of(cfg, server) else { continue };
                any = true;
                let tokens = match db.load_tokens(&cfg.tenant, &client.name, &server.username) {
                    Ok(t) => t,
                    Err(e) => return fail(e, 1),
                };
                let (health, account, scopes, expires) = match &tokens {
                    None => ("missing: run `mailplug oauth login`".to_string(), None, String::new(), None),
                    Some(t) => {
                        let health = match (t.expires_at, &t.refresh_token) {
                            (Some(x), _) if x > now + oauth::REFRESH_MARGIN_MS => format!("ok, expires in {} min", (x - now) / 60_000),
                            (_, Some(_)) => "access token expired or expiring: refreshed on next use".to_string(),
                            (Some(_), None) => "expired and no refresh token: run `mailplug oauth login`".to_string(),
                            (None, _) => "ok (no expiry given)".to_string(),
                        };
                        (health, t.account.clone(), t.scopes.join(" "), t.expires_at)
                    }
                };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"server": what, "username": server.username, "client": client.name,
                            "account": account, "scopes": scopes, "expires_at_ms": expires, "health": health})
                    );
                } else {
                    println!("{what}\t{}\t{}\t{}\t{health}", server.username, account.as_deref().unwrap_or("-"), if scopes.is_empty() { "-" } else { &scopes });
                }
            }
            if !any {
                eprintln!("mailplug: no server in this configuration uses OAuth2");
            }
            ExitCode::SUCCESS
        }
    }
}

/// Prints a configuration snippet for an address: from the catalogue when its domain is in
/// it, else from DNS and autoconfig (`custom_domain`).
async fn discover(plugin: &Plugin, address: &str, json: bool, opts: &mailplug_host::discovery::DiscoveryOptions) -> ExitCode {
    let Some((local, domain)) = address.rsplit_once('@').filter(|(l, d)| !l.is_empty() && d.contains('.')) else {
        return fail(format!("\"{address}\" is not an e-mail address"), 2);
    };
    let mut instance = match plugin.instantiate(64 << 20, 2000).await {
        Ok(i) => i,
        Err(e) => return fail(e, 1),
    };
    let preset = match instance.preset_by_domain(domain).await {
        Ok(Some(p)) => p,
        Ok(None) => return custom_domain(&mut instance, address, json, opts).await,
        Err(e) => return fail(e, 1),
    };
    let username = match preset.username {
        mailplug_host::engine::UsernameForm::FullAddress => address.to_string(),
        mailplug_host::engine::UsernameForm::LocalPart => local.to_string(),
    };
    let oauth = preset.auth.iter().find_map(|a| match a {
        mailplug_host::engine::AuthSupport::Oauth2(p) => Some(p.clone()),
        _ => None,
    });
    let basic_first = matches!(
        preset.auth.first(),
        Some(mailplug_host::engine::AuthSupport::Basic | mailplug_host::engine::AuthSupport::AppPasswordRequired)
    );
    if json {
        let server = |s: &Option<mailplug_host::engine::ServerPreset>| s.as_ref().map(|s| serde_json::json!({"host": s.host, "port": s.port, "tls": s.tls}));
        println!(
            "{}",
            serde_json::json!({"address": address, "preset": preset.id, "source": "catalogue", "trusted": true,
                "imap": server(&preset.imap), "pop3": server(&preset.pop3), "smtp": server(&preset.smtp), "username": username})
        );
        return ExitCode::SUCCESS;
    }
    let auth = if basic_first {
        "password_env = \"MAILBOX_PASSWORD\"   # the app password".to_string()
    } else {
        format!("auth = \"oauth2\"\noauth = \"{}\"   # define [oauth.{}] with your client id", oauth.clone().unwrap_or_default(), oauth.unwrap_or_default())
    };
    println!("# {} ({}), from the preset catalogue", preset.name, preset.source);
    let inbound = preset.imap.as_ref().map(|s| ("imap", s)).or(preset.pop3.as_ref().map(|s| ("pop3", s)));
    if let Some((proto, s)) = inbound {
        println!("[[mailbox]]\nname = \"{local}\"\naddress = \"{address}\"\nprotocol = \"{proto}\"\nhost = \"{}\"\nport = {}\ntls = {}\nusername = \"{username}\"\n{auth}\n", s.host, s.port, s.tls);
    }
    if let Some(s) = &preset.smtp {
        let provider = match preset.smtp_provider {
            mailplug_host::engine::GuestProvider::Gmail => "gmail",
            mailplug_host::engine::GuestProvider::Microsoft => "microsoft",
            mailplug_host::engine::GuestProvider::Generic => "generic",
        };
        println!("[[queue]]\nname = \"{local}\"\nmailboxes = [\"{local}\"]\n[queue.smtp]\nprovider = \"{provider}\"\nhost = \"{}\"\nport = {}\ntls = {}\nusername = \"{username}\"\n{auth}", s.host, s.port, s.tls);
    }
    for n in &preset.notes {
        println!("# note: {}", n.en);
    }
    ExitCode::SUCCESS
}

/// Discovery by MX, SRV and autoconfig for a domain outside the catalogue. The whole text
/// output is a configuration: the findings as comments, then the snippet.
async fn custom_domain(
    instance: &mut mailplug_host::engine::Instance,
    address: &str,
    json: bool,
    opts: &mailplug_host::discovery::DiscoveryOptions,
) -> ExitCode {
    let report = match mailplug_host::discovery::discover(instance, address, opts).await {
        Ok(r) => r,
        Err(e) => return fail(e, 1),
    };
    let preset = match &report.discovery.preset {
        Some(id) => match instance.presets().await {
            Ok(all) => all.into_iter().find(|p| &p.id == id),
            Err(e) => return fail(e, 1),
        },
        None => None,
    };
    let snippet = report.snippet(preset.as_ref());
    if json {
        println!("{}", report.to_json(snippet.as_deref()));
    } else {
        print!("{}", report.comments());
        if let Some(s) = &snippet {
            println!("{s}");
        }
    }
    if snippet.is_some() {
        return ExitCode::SUCCESS;
    }
    fail(
        format!("nothing found for {address}: its domain is not in the preset catalogue and neither MX, SRV nor autoconfig name its servers; enter the provider's settings by hand (see `mailplug presets`)"),
        1,
    )
}

async fn print_presets(plugin: &Plugin, json: bool) -> ExitCode {
    let mut instance = match plugin.instantiate(64 << 20, 2000).await {
        Ok(i) => i,
        Err(e) => return fail(e, 1),
    };
    let presets = match instance.presets().await {
        Ok(p) => p,
        Err(e) => return fail(e, 1),
    };
    let server = |s: &Option<mailplug_host::engine::ServerPreset>| match s {
        Some(s) => format!("{}:{} {}", s.host, s.port, if s.tls { "TLS" } else { "STARTTLS" }),
        None => "-".into(),
    };
    for p in &presets {
        let auth: Vec<String> = p
            .auth
            .iter()
            .map(|a| match a {
                mailplug_host::engine::AuthSupport::Basic => "password".to_string(),
                mailplug_host::engine::AuthSupport::AppPasswordRequired => "app password".to_string(),
                mailplug_host::engine::AuthSupport::Oauth2(p) => format!("OAuth2 ({p})"),
            })
            .collect();
        if json {
            println!(
                "{}",
                serde_json::json!({"id": p.id, "name": p.name, "domains": p.domains, "pop3": server(&p.pop3), "imap": server(&p.imap),
                    "smtp": server(&p.smtp), "auth": auth, "source": p.source,
                    "notes": p.notes.iter().map(|n| serde_json::json!({"en": n.en, "de": n.de})).collect::<Vec<_>>()})
            );
        } else {
            println!("{} ({})\n  POP3 {}\n  IMAP {}\n  SMTP {}\n  sign-in: {}", p.name, p.id, server(&p.pop3), server(&p.imap), server(&p.smtp), auth.join(", "));
            for n in &p.notes {
                println!("  note: {}", n.en);
            }
        }
    }
    ExitCode::SUCCESS
}

fn print_plan(p: &mailplug_host::engine::FromPlan, json: bool) {
    if json {
        let warnings: Vec<_> = p.warnings.iter().map(|w| serde_json::json!({"en": w.en, "de": w.de})).collect();
        let v = serde_json::json!({
            "from": p.from, "sender": p.sender, "reply_to": p.reply_to, "envelope_from": p.envelope_from,
            "customer_sees": {"en": p.customer_sees.en, "de": p.customer_sees.de}, "warnings": warnings,
        });
        println!("{v}");
        return;
    }
    println!("From:       {}", p.from);
    println!("Sender:     {}", p.sender.as_deref().unwrap_or("(none)"));
    println!("Reply-To:   {}", p.reply_to.as_deref().unwrap_or("(none)"));
    println!("MAIL FROM:  <{}>", p.envelope_from);
    println!();
    println!("{}", p.customer_sees.en);
    println!("{}", p.customer_sees.de);
    for w in &p.warnings {
        println!();
        println!("warning: {}", w.en);
        println!("Warnung: {}", w.de);
    }
}

/// `mailplug check`: every selected server, each step with its time; exit 1 when one failed.
async fn run_check(
    plugin: &Plugin,
    cfg: &TenantConfig,
    findings: &[ops::ConfigFinding],
    mailbox: Option<&str>,
    queue: Option<&str>,
    probe_to: Option<&str>,
    json: bool,
) -> ExitCode {
    use mailplug_host::check;
    let (mailboxes, queues): (Vec<String>, Vec<String>) = match (mailbox, queue) {
        (Some(m), _) => (vec![m.to_string()], vec![]),
        (_, Some(q)) => (vec![], vec![q.to_string()]),
        _ => (cfg.mailboxes.iter().map(|m| m.name.clone()).collect(), cfg.queues.iter().map(|q| q.name.clone()).collect()),
    };
    let store = match Database::open(&cfg.database) {
        Ok(db) => db,
        Err(e) => return fail(e, 1),
    };
    let mut reports = Vec::new();
    for name in &mailboxes {
        match check::check_mailbox(plugin, cfg, &store, name, findings).await {
            Ok(r) => reports.push(r),
            Err(e) => return fail(e, 2),
        }
        print_check(reports.last(), json);
    }
    for name in &queues {
        match check::check_queue(plugin, cfg, &store, name, probe_to, findings).await {
            Ok(r) => reports.push(r),
            Err(e) => return fail(e, 2),
        }
        print_check(reports.last(), json);
    }
    if reports.iter().all(|r| r.passed()) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn print_check(report: Option<&mailplug_host::check::CheckReport>, json: bool) {
    let Some(r) = report else { return };
    if json {
        let steps: Vec<_> = r
            .steps
            .iter()
            .map(|s| serde_json::json!({"step": s.step, "ok": true, "ms": s.ms, "detail": s.detail}))
            .chain(r.failure.iter().map(|f| {
                serde_json::json!({
                    "step": f.step, "ok": false, "ms": f.ms, "error": f.error,
                    "cause": {"en": f.cause.en, "de": f.cause.de}, "action": {"en": f.action.en, "de": f.action.de},
                })
            }))
            .collect();
        let folders: Vec<_> = r.folders.iter().map(|(f, n)| serde_json::json!({"folder": f, "messages": n})).collect();
        println!(
            "{}",
            serde_json::json!({
                "target": r.target, "protocol": r.protocol, "server": r.server, "security": r.security,
                "passed": r.passed(), "steps": steps, "folders": folders,
            })
        );
        return;
    }
    println!("{} ({} {}, {})", r.target, r.protocol, r.server, r.security);
    for s in &r.steps {
        println!("  ok    {:<13}{:>6} ms  {}", s.step, s.ms, s.detail);
    }
    match &r.failure {
        None => println!("  passed: every step succeeded; nothing was fetched, sent or changed"),
        Some(f) => {
            println!("  FAIL  {:<13}{:>6} ms  {}", f.step, f.ms, f.error);
            println!("        cause:    {}", f.cause.en);
            println!("        action:   {}", f.action.en);
            println!("        Ursache:  {}", f.cause.de);
            println!("        Maßnahme: {}", f.action.de);
        }
    }
}

fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    let line = e.to_string().replace('\n', " ");
    eprintln!("mailplug: {line}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(e, 1),
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    if let Command::Discover { address, json, dns, extra_ca, allow_loopback, timeout } = &cli.command {
        let plugin_path = cli.plugin.clone().unwrap_or_else(ops::default_plugin_path);
        let opts = mailplug_host::discovery::DiscoveryOptions {
            nameserver: *dns,
            lookup_timeout: std::time::Duration::from_secs((*timeout).max(1)),
            total_timeout: std::time::Duration::from_secs((*timeout).max(1) * 3),
            extra_ca: extra_ca.clone(),
            allow_loopback: *allow_loopback,
        };
        return match Plugin::load(&plugin_path) {
            Ok(p) => discover(&p, address, *json, &opts).await,
            Err(e) => fail(e, 1),
        };
    }
    if let Command::Presets { config: None, json } = &cli.command {
        let plugin_path = cli.plugin.clone().unwrap_or_else(ops::default_plugin_path);
        return match Plugin::load(&plugin_path) {
            Ok(p) => print_presets(&p, *json).await,
            Err(e) => fail(e, 1),
        };
    }
    let config_path = match &cli.command {
        // Without --config (and for discover) it returned above.
        Command::Presets { config, .. } => config.clone().unwrap_or_default(),
        Command::Discover { .. } => PathBuf::new(),
        Command::Fetch { config, .. }
        | Command::Send { config, .. }
        | Command::PlanFrom { config, .. }
        | Command::Check { config, .. } => config.clone(),
        Command::Oauth { command: OauthCommand::Login { config, .. } | OauthCommand::Status { config, .. } } => config.clone(),
    };
    let cfg = match TenantConfig::load(&config_path) {
        Ok(c) => c,
        Err(e) => return fail(e, 2),
    };
    if !cfg.licensed {
        return fail(HostError::Unlicensed(cfg.tenant.clone()), 3);
    }
    let plugin_path = cli.plugin.clone().unwrap_or_else(ops::default_plugin_path);
    let plugin = match Plugin::load(&plugin_path) {
        Ok(p) => p,
        Err(e) => return fail(e, 1),
    };
    // Settings that cannot work stop here, before anything connects; doubtful ones are shown.
    let findings = match ops::validate_config(&plugin, &cfg).await {
        Ok(f) => f,
        Err(e) => return fail(e, 1),
    };
    if let Command::Presets { json, .. } = &cli.command {
        for f in &findings {
            if *json {
                println!("{}", serde_json::json!({"server": f.server, "severity": if f.error { "error" } else { "warning" }, "field": f.field, "en": f.en, "de": f.de}));
            } else {
                println!("{}: {} ({}): {}\n    {}", if f.error { "error" } else { "warning" }, f.server, f.field, f.en, f.de);
            }
        }
        if findings.is_empty() && !*json {
            println!("no problems found in {}", config_path.display());
        }
        return if findings.iter().any(|f| f.error) { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    if let Command::Check { mailbox, queue, probe_to, json, .. } = &cli.command {
        // The check reports the findings as its first step, per server.
        return run_check(&plugin, &cfg, &findings, mailbox.as_deref(), queue.as_deref(), probe_to.as_deref(), *json).await;
    }
    for f in &findings {
        eprintln!("mailplug: {}: {} ({}): {}", if f.error { "error" } else { "warning" }, f.server, f.field, f.en);
    }
    if findings.iter().any(|f| f.error) {
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Presets { .. } | Command::Discover { .. } | Command::Check { .. } => ExitCode::SUCCESS,
        Command::Fetch { mailbox, out, json, .. } => {
            let names: Vec<String> = match mailbox {
                Some(n) => vec![n],
                None => cfg.mailboxes.iter().map(|m| m.name.clone()).collect(),
            };
            if names.is_empty() {
                return fail("the configuration has no [[mailbox]] entries", 2);
            }
            let db = match Database::open(&cfg.database) {
                Ok(db) => db,
                Err(e) => return fail(e, 1),
            };
            let progress = std::io::stderr().is_terminal();
            let mut failed = None;
            for name in names {
                let eml = match &out {
                    Some(dir) => match EmlDir::new(dir.join(mailplug_host::store::safe_name(&name))) {
                        Ok(e) => Some(e),
                        Err(e) => return fail(e, 1),
                    },
                    None => None,
                };
                let mut sink = CliSink { mailbox: name.clone(), db: db.sink(&cfg.tenant, &name), eml, json, progress, pending: Vec::new() };
                let result = ops::fetch(&plugin, &cfg, &name, &mut sink, &db).await;
                if progress {
                    eprint!("\r\x1b[K");
                }
                let st = sink.db.stats;
                match result {
                    Ok(s) => eprintln!(
                        "mailplug: {name}: {} new message(s) stored{}{}{}",
                        st.stored,
                        if st.duplicates > 0 { format!(", {} already stored", st.duplicates) } else { String::new() },
                        if s.skipped > 0 { format!(", {} skipped (over a limit)", s.skipped) } else { String::new() },
                        if s.remaining > 0 { format!(", {} more waiting (batch limit): run again", s.remaining) } else { String::new() }
                    ),
                    Err(e) => {
                        eprintln!("mailplug: mailbox \"{name}\": {}", e.to_string().replace('\n', " "));
                        explain_error(&plugin, &cfg, &e).await;
                        failed = Some(1);
                    }
                }
            }
            failed.map(ExitCode::from).unwrap_or(ExitCode::SUCCESS)
        }
        Command::Oauth { command } => oauth_command(&plugin, &cfg, command).await,
        Command::PlanFrom { queue, mailbox, json, .. } => match ops::plan_from(&plugin, &cfg, &queue, &mailbox).await {
            Ok(p) => {
                print_plan(&p, json);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e, 1),
        },
        Command::Send { queue, to, subject, body, body_file, reply_to_message, html_file, force, json, .. } => {
            let text_body = match (body, body_file) {
                (Some(b), _) => b,
                (None, Some(f)) => match std::fs::read_to_string(&f) {
                    Ok(b) => b,
                    Err(e) => return fail(format!("cannot read --body-file {}: {e}", f.display()), 2),
                },
                (None, None) => return fail("give --body or --body-file", 2),
            };
            // For --json: what happened to the copy in the Sent folder (replies only).
            let mut saved: Option<serde_json::Value> = None;
            let result = match reply_to_message {
                Some(reference) => {
                    let html_body = match html_file.map(std::fs::read_to_string).transpose() {
                        Ok(h) => h,
                        Err(e) => return fail(format!("cannot read --html-file: {e}"), 2),
                    };
                    let db = match Database::open(&cfg.database) {
                        Ok(db) => db,
                        Err(e) => return fail(e, 1),
                    };
                    let reply = ops::Reply { text_body, html_body, force };
                    ops::send_reply(&plugin, &cfg, &queue, &db, &reference, &reply).await.map(|r| {
                        eprintln!("mailplug: {}", r.plan.customer_sees.en);
                        for w in &r.plan.warnings {
                            eprintln!("mailplug: warning: {}", w.en);
                        }
                        match &r.saved {
                            ops::SavedReply::Saved { folder, .. } => eprintln!("mailplug: saved a copy in \"{folder}\""),
                            ops::SavedReply::Skipped(why) => eprintln!("mailplug: {why}"),
                            ops::SavedReply::Failed(w) => eprintln!("mailplug: warning: {w}"),
                            ops::SavedReply::NotConfigured => {}
                        }
                        saved = Some(match &r.saved {
                            ops::SavedReply::Saved { folder, uid, created_folder } => serde_json::json!({
                                "saved": true, "folder": folder, "uid": uid, "created_folder": created_folder,
                            }),
                            ops::SavedReply::Skipped(why) => serde_json::json!({"saved": false, "skipped": why}),
                            ops::SavedReply::Failed(w) => serde_json::json!({"saved": false, "warning": w}),
                            ops::SavedReply::NotConfigured => serde_json::Value::Null,
                        });
                        r.sent
                    })
                }
                None => {
                    let db = match Database::open(&cfg.database) {
                        Ok(db) => db,
                        Err(e) => return fail(e, 1),
                    };
                    let msg = Outgoing { to, subject: subject.unwrap_or_default(), text_body };
                    ops::send(&plugin, &cfg, &queue, &msg, &db).await
                }
            };
            match result {
                Ok(sent) => {
                    let r = &sent.report;
                    if json {
                        let rcpts: Vec<_> = r
                            .recipients
                            .iter()
                            .map(|x| serde_json::json!({"address": x.address, "accepted": x.accepted, "reply": format!("{} {}", x.reply.code, x.reply.text)}))
                            .collect();
                        let mut v = serde_json::json!({"message_id": sent.message_id, "reply": format!("{} {}", r.final_reply.code, r.final_reply.text), "recipients": rcpts});
                        if let Some(copy) = saved.filter(|c| !c.is_null()) {
                            v["sent_copy"] = copy;
                        }
                        println!("{v}");
                    } else {
                        println!("{} {}", r.final_reply.code, r.final_reply.text);
                        for x in r.recipients.iter().filter(|x| !x.accepted) {
                            eprintln!("mailplug: recipient {} refused: {} {}", x.address, x.reply.code, x.reply.text);
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let code = fail(&e, 1);
                    explain_error(&plugin, &cfg, &e).await;
                    code
                }
            }
        }
    }
}

/// Prints the cause and the admin's action for an error about a server, in English and German.
async fn explain_error(plugin: &Plugin, cfg: &TenantConfig, e: &HostError) {
    let Ok(mut instance) = ops::instance_for(plugin, cfg).await else { return };
    let stage = mailplug_host::engine::Stage::Connect;
    if let Some(d) = mailplug_host::check::explain(&mut instance, e, stage).await {
        eprintln!("mailplug:   cause:    {}", d.cause.en);
        eprintln!("mailplug:   action:   {}", d.action.en);
        eprintln!("mailplug:   Ursache:  {}", d.cause.de);
        eprintln!("mailplug:   Maßnahme: {}", d.action.de);
    }
}
