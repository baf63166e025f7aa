//! Runtime costs, side by side in one run and without mail servers: how long `mailplug presets`
//! takes from process start with the compile cache warm and without a cache, against
//! `mailplug --help` (a process that loads nothing); how long instantiating the component
//! takes with and without the instance pool; and how much memory an idle instance holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailplug_host::runtime::Allocation;
use mailplug_host::{Plugin, RuntimeOptions};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn mailplug_bin() -> PathBuf {
    std::env::var("MAILPLUG_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        let exe = std::env::current_exe().expect("current exe");
        exe.with_file_name("mailplug")
    })
}

/// Wall time of one `mailplug` process from spawn to exit.
fn time_cli(bin: &Path, wasm: &Path, cache: &str, args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new(bin)
        .args(args)
        .env("MAILPLUG_WASM", wasm)
        .env("MAILPLUG_CACHE_DIR", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mailplug runs");
    let t = start.elapsed();
    assert!(status.success(), "mailplug {args:?} failed");
    t
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// Runs the runtime benchmarks; the markdown tables.
pub async fn run(wasm: &Path, cli_runs: usize, instantiations: usize) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut out = format!("Runtime, {cores} cores, load average at the start {}\n\n", load());
    let cache = std::env::temp_dir().join(format!("mailplug-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let cache_s = cache.to_str().expect("utf-8 temp dir").to_string();
    let bin = mailplug_bin();

    // CLI start, interleaved so that all three see the same load.
    eprintln!("CLI start: {cli_runs} runs of each ...");
    time_cli(&bin, wasm, &cache_s, &["compile"]);
    let (mut help, mut warm, mut cold) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..cli_runs {
        help.push(time_cli(&bin, wasm, &cache_s, &["--help"]));
        warm.push(time_cli(&bin, wasm, &cache_s, &["presets"]));
        // Cold runs compile (about a second of CPU): a fifth as many.
        if i % 5 == 0 {
            cold.push(time_cli(&bin, wasm, "", &["presets"]));
        }
    }
    let h = pct(&mut help, 0.5);
    out.push_str(&format!(
        "CLI start: {} (wall time from spawn to exit; {cli_runs} runs, cold {} runs)\n\n",
        bin.display(),
        cold.len()
    ));
    out.push_str("| command | median (ms) | p90 (ms) | ratio to --help |\n|---|---:|---:|---:|\n");
    for (name, v) in [
        ("mailplug --help", &mut help),
        ("mailplug presets, compile cache warm", &mut warm),
        ("mailplug presets, no cache (compiles)", &mut cold),
    ] {
        let (m, p) = (pct(v, 0.5), pct(v, 0.9));
        out.push_str(&format!("| {name} | {:.1} | {:.1} | {:.1} |\n", ms(m), ms(p), m.as_secs_f64() / h.as_secs_f64()));
    }

    // Instantiation and idle memory, pooled and on demand, from the same compiled component.
    let base = RuntimeOptions::default().with_instances(128).with_cache_dir(Some(cache.clone()));
    let pooled = Plugin::load_with(wasm, &base).expect("pooled plugin");
    assert!(matches!(pooled.allocation(), Allocation::Pool { .. }), "{:?}", pooled.allocation());
    let on_demand = Plugin::load_with(wasm, &RuntimeOptions { pooled: false, ..base.clone() }).expect("on-demand plugin");
    let cap = 256 << 20;
    eprintln!("instantiate: {instantiations} of each ...");
    let mut rows = Vec::new();
    for (name, p) in [("pool", &pooled), ("on demand (no pool)", &on_demand)] {
        for _ in 0..50 {
            drop(p.instantiate(cap, 2000).await.expect("warm-up"));
        }
        let (mut inst, mut op) = (Vec::new(), Vec::new());
        for _ in 0..instantiations {
            let start = Instant::now();
            let mut i = p.instantiate(cap, 2000).await.expect("instance");
            inst.push(start.elapsed());
            i.normalise_app_password("abcd efgh ijkl mnop").await.expect("call");
            drop(i);
            op.push(start.elapsed());
        }
        rows.push((name, pct(&mut inst, 0.5), pct(&mut inst, 0.99), pct(&mut op, 0.5)));
    }
    out.push_str(&format!(
        "\nInstantiation ({instantiations} each, memory cap 256 MB, after 50 warm-up; \"operation\" = instantiate, one small call, drop)\n\n"
    ));
    out.push_str("| allocation | instantiate median (us) | instantiate p99 (us) | operation median (us) | ratio of medians to pool |\n|---|---:|---:|---:|---:|\n");
    let pool_median = rows[0].1;
    for (name, m, p99, op) in &rows {
        out.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2} |\n",
            us(*m),
            us(*p99),
            us(*op),
            m.as_secs_f64() / pool_median.as_secs_f64()
        ));
    }

    const IDLE: usize = 100;
    out.push_str(&format!(
        "\nIdle instance memory (resident memory of this process, {IDLE} instances held, per instance)\n\n"
    ));
    out.push_str("| allocation | just instantiated (KiB) | after one call (KiB) |\n|---|---:|---:|\n");
    for (name, p) in [("pool", &pooled), ("on demand (no pool)", &on_demand)] {
        let before = rss();
        let mut held = Vec::new();
        for _ in 0..IDLE {
            held.push(p.instantiate(cap, 2000).await.expect("instance"));
        }
        let fresh = rss();
        for i in held.iter_mut() {
            i.presets().await.expect("presets");
        }
        let used = rss();
        drop(held);
        let kib = |after: usize| after.saturating_sub(before) as f64 / IDLE as f64 / 1024.0;
        out.push_str(&format!("| {name} | {:.0} | {:.0} |\n", kib(fresh), kib(used)));
    }
    let _ = std::fs::remove_dir_all(&cache);
    out.push_str(&format!("\nload average at the end {}\n", load()));
    out
}
