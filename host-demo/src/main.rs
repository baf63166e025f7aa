//! `mailplug`: the demo host's command line.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use mailplug_host::ops;
use mailplug_host::runtime::CacheStatus;
use mailplug_host::{HostError, Plugin, RuntimeOptions, TenantConfig};

use cli::args::{Cli, Command, OauthCommand};
use cli::check::run_check;
use cli::discover::{discover, print_presets};
use cli::enqueue::{run_enqueue, EnqueueArgs};
use cli::outbox::run_outbox;
use cli::fetch::run_fetch;
use cli::oauth::oauth_command;
use cli::output::{fail, print_plan};
use cli::send::{run_send, Message, SendArgs};
use cli::send_batch::{run_send_batch, BatchArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve(args) = cli.command {
        // Its own runtime: the API on worker threads, the actors on this one.
        return cli::serve::run_serve(cli.plugin, cli.store, cli.store_password_file, args);
    }
    cli::store::select(cli.store.clone(), cli.store_password_file.clone());
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
        return match load_plugin(&plugin_path, &RuntimeOptions::default()) {
            Ok(p) => discover(&p, address, *json, &opts).await,
            Err(e) => fail(e, 1),
        };
    }
    if let Command::Presets { config: None, json } = &cli.command {
        let plugin_path = cli.plugin.clone().unwrap_or_else(ops::default_plugin_path);
        return match load_plugin(&plugin_path, &RuntimeOptions::default()) {
            Ok(p) => print_presets(&p, *json).await,
            Err(e) => fail(e, 1),
        };
    }
    if let Command::Compile = &cli.command {
        let plugin_path = cli.plugin.clone().unwrap_or_else(ops::default_plugin_path);
        return compile(&plugin_path);
    }
    let config_path = match &cli.command {
        // Without --config (and for discover and compile) it returned above.
        Command::Presets { config, .. } => config.clone().unwrap_or_default(),
        Command::Discover { .. } | Command::Compile | Command::Serve(_) => PathBuf::new(),
        Command::Fetch { config, .. }
        | Command::Send { config, .. }
        | Command::PlanFrom { config, .. }
        | Command::Check { config, .. } => config.clone(),
        Command::Oauth { command: OauthCommand::Login { config, .. } | OauthCommand::Status { config, .. } } => config.clone(),
        Command::Enqueue { config, .. } => config.clone(),
        Command::Outbox { command } => command.config().clone(),
    };
    let cfg = match TenantConfig::load(&config_path) {
        Ok(c) => c,
        Err(e) => return fail(e, 2),
    };
    if !cfg.licensed {
        return fail(HostError::Unlicensed(cfg.tenant.clone()), 3);
    }
    let plugin_path = cli.plugin.clone().unwrap_or_else(ops::default_plugin_path);
    // The instance pool is sized from the tenant's memory limits.
    let plugin = match load_plugin(&plugin_path, &RuntimeOptions::for_limits(&cfg.limits)) {
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
        Command::Presets { .. } | Command::Discover { .. } | Command::Check { .. } | Command::Compile | Command::Serve(_) => {
            ExitCode::SUCCESS
        }
        Command::Fetch { mailbox, out, json, .. } => run_fetch(&plugin, &cfg, mailbox, out, json).await,
        Command::Oauth { command } => oauth_command(&plugin, &cfg, command).await,
        Command::PlanFrom { queue, mailbox, json, .. } => match ops::plan_from(&plugin, &cfg, &queue, &mailbox).await {
            Ok(p) => {
                print_plan(&p, json);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e, 1),
        },
        Command::Enqueue { queue, to, subject, body, reply, max_age, json, .. } => {
            let args = EnqueueArgs { queue, message: Message { to, subject, body, reply }, max_age, json };
            run_enqueue(&plugin, &cfg, args).await
        }
        Command::Outbox { command } => run_outbox(&plugin, &cfg, command).await,
        Command::Send { queue, batch, batch_file, json, .. } if batch.is_some() || batch_file.is_some() => {
            run_send_batch(&plugin, &cfg, BatchArgs { queue, dir: batch, lines: batch_file, json }).await
        }
        Command::Send { queue, to, subject, body, reply, json, .. } => {
            run_send(&plugin, &cfg, SendArgs { queue, message: Message { to, subject, body, reply }, json }).await
        }
    }
}

/// Loads the component; says on stderr when the compile cache could not be used (the command
/// still runs, compiled in memory).
fn load_plugin(path: &Path, opts: &RuntimeOptions) -> Result<Plugin, HostError> {
    let plugin = Plugin::load_with(path, opts)?;
    if let CacheStatus::Unused(why) = plugin.cache_status() {
        eprintln!("mailplug: note: the compiled component is not cached, so each command compiles it again: {why}");
    }
    Ok(plugin)
}

/// `mailplug compile`: makes sure the compile cache holds this component.
fn compile(wasm: &Path) -> ExitCode {
    let plugin = match Plugin::load_with(wasm, &RuntimeOptions::default()) {
        Ok(p) => p,
        Err(e) => return fail(e, 1),
    };
    match plugin.cache_status() {
        CacheStatus::Loaded(path) => println!("{} is already compiled: {}", wasm.display(), path.display()),
        CacheStatus::Written { path, replaced: None } => println!("compiled {} into {}", wasm.display(), path.display()),
        CacheStatus::Written { path, replaced: Some(why) } => {
            println!("compiled {} into {} (the file there was replaced: {why})", wasm.display(), path.display())
        }
        CacheStatus::Unused(why) => return fail(HostError::Plugin(format!("the compile cache cannot be used: {why}")), 1),
        CacheStatus::Off => {
            return fail(
                HostError::Plugin("no compile cache directory: set MAILPLUG_CACHE_DIR (or HOME) to an absolute path".into()),
                1,
            )
        }
    }
    ExitCode::SUCCESS
}
