//! The command line's arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mailplug", version, about = "Fetch and send a tenant's mail through the mailplug component")]
pub struct Cli {
    /// The mailplug component (.wasm). Default: $MAILPLUG_WASM, else the release build next to this binary.
    #[arg(long, global = true)]
    pub plugin: Option<PathBuf>,
    /// The store: the path of an SQLite file, or a PostgreSQL URL
    /// (postgres://user@host:port/database[?sslmode=require|verify-full&sslrootcert=FILE]).
    /// Default for `serve`: mailplug-serve.sqlite3 in the data dir ($XDG_DATA_HOME/mailplug or
    /// ~/.local/share/mailplug); for the other commands: the tenant file's `database`.
    #[arg(long, global = true, value_name = "PATH|URL")]
    pub store: Option<String>,
    /// The file holding the PostgreSQL password (mode 0600). Default:
    /// $MAILPLUG_STORE_PASSWORD_FILE. Keep the password out of the URL: a URL shows in `ps`.
    #[arg(long, global = true, value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What `send` and `enqueue` share besides recipients, subject and body text: the body from a
/// file, and a reply to a stored message.
#[derive(clap::Args)]
pub struct ReplyOptions {
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Reply to this stored message, named explicitly: db:<database id>, mid:<Message-ID> (or
    /// <Message-ID>), or its server id (imap:..., pop3:...); a reference matching several
    /// messages is refused. Threaded, with the sender planned for the mailbox it arrived in.
    #[arg(long)]
    pub reply_to_message: Option<String>,
    /// Optional HTML body for a reply.
    #[arg(long, requires = "reply_to_message")]
    pub html_file: Option<PathBuf>,
    /// Reply even to an auto-reply, bulk mail or bounce.
    #[arg(long, requires = "reply_to_message")]
    pub force: bool,
}

#[derive(Subcommand)]
pub enum Command {
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
        #[arg(long, required_unless_present_any = ["reply_to_message", "batch", "batch_file"], conflicts_with_all = ["reply_to_message", "batch", "batch_file"])]
        to: Vec<String>,
        #[arg(long, required_unless_present_any = ["reply_to_message", "batch", "batch_file"], conflicts_with_all = ["reply_to_message", "batch", "batch_file"])]
        subject: Option<String>,
        #[arg(long, conflicts_with_all = ["body_file", "batch", "batch_file"], required_unless_present_any = ["body_file", "batch", "batch_file"])]
        body: Option<String>,
        /// Send every draft in this folder over one SMTP session: each *.toml or *.json file is
        /// one message (`to` = an address or a list, `subject`, `body`), sent in file-name order.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["reply_to_message", "body_file"])]
        batch: Option<PathBuf>,
        /// Send the drafts of this JSON-lines file over one SMTP session, one JSON object per
        /// line (same keys as --batch); with --batch, after the folder's drafts.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["reply_to_message", "body_file"])]
        batch_file: Option<PathBuf>,
        #[command(flatten)]
        reply: ReplyOptions,
        #[arg(long)]
        json: bool,
    },
    /// Put a message, or a reply to a stored message, into a queue's durable outbox: composed
    /// now, committed, then sent by `mailplug outbox drain` (or the service). Prints the outbox
    /// id and the Message-ID once committed.
    Enqueue {
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
        #[command(flatten)]
        reply: ReplyOptions,
        /// How long transient failures are retried before the message is failed (seconds; default 5 days).
        #[arg(long, value_name = "SECS")]
        max_age: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// The durable outbox: list it, send what is due (one pass), or decide about a held or
    /// failed message.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
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
    /// Compile the component into the compile cache ($MAILPLUG_CACHE_DIR, else
    /// $XDG_CACHE_HOME/mailplug or ~/.cache/mailplug), so that later commands map it in
    /// milliseconds instead of compiling it; every command also does this on first use.
    Compile,
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
    /// Run every tenant of a folder as an always-on service: each mailbox polled, state, HTTP
    /// API and metrics (docs/API.md), until SIGTERM or SIGINT.
    Serve(ServeArgs),
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

/// `mailplug serve`'s options.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The folder of tenant files: every *.toml in it is a tenant (rescanned every 2 s).
    #[arg(long, value_name = "DIR")]
    pub tenants: PathBuf,
    /// Where the HTTP API listens (port 0: any free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8025")]
    pub listen: std::net::SocketAddr,
    /// A file (mode 0600) with the admin's bearer token, which reaches every route.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Fetches running at once over all tenants.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_concurrent: usize,
    /// Fetches running at once for one tenant.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_per_tenant: usize,
    /// The first wait after an error the server may get over, doubled per failure in a row.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub backoff_secs: u64,
    /// The longest wait after errors in a row.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub backoff_max_secs: u64,
    /// Log level or filter (tracing's EnvFilter syntax); default: $RUST_LOG, else "info".
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// With a PostgreSQL store: this node's id in the lease table (unique among the nodes
    /// sharing the store); default: host name, process id and start time.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// With a PostgreSQL store: how long a lease holds without renewal (renewed every third of
    /// it); default: $MAILPLUG_LEASE_TTL_SECS, else 30.
    #[arg(long, value_name = "SECS")]
    pub lease_ttl: Option<u64>,
}

#[derive(Subcommand)]
pub enum OauthCommand {
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

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// The outbox's messages, oldest first.
    List {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        queue: Option<String>,
        /// Only this state: queued, in-flight, delivered, failed, held, cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One pass of the sender: messages left in flight by a stopped sender become held, then
    /// the due messages of each queue (or of --queue) go out over one session per queue.
    Drain {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a held or failed message again: the same bytes, the same Message-ID.
    Resend {
        #[arg(long)]
        config: PathBuf,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A held message was delivered after all (the recipients have it).
    MarkDelivered {
        #[arg(long)]
        config: PathBuf,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Do not send a queued, held or failed message.
    Cancel {
        #[arg(long)]
        config: PathBuf,
        id: String,
        #[arg(long)]
        json: bool,
    },
}

impl OutboxCommand {
    pub fn config(&self) -> &PathBuf {
        match self {
            OutboxCommand::List { config, .. }
            | OutboxCommand::Drain { config, .. }
            | OutboxCommand::Resend { config, .. }
            | OutboxCommand::MarkDelivered { config, .. }
            | OutboxCommand::Cancel { config, .. } => config,
        }
    }
}
