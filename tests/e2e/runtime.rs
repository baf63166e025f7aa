//! The runtime through the real `.wasm` (no servers needed): the compile cache (written on first
//! use and by `mailplug compile`, mapped afterwards, compiled again and replaced when it is
//! missing, stale, truncated or altered, never used from a directory others can write) and
//! the instance pool (a full pool and a too-large memory cap are clear errors, a reused slot
//! starts fresh).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use mailplug_host::engine::Draft;
use mailplug_host::runtime::{Allocation, CacheStatus};
use mailplug_host::{Plugin, RuntimeOptions};
use mailplug_tests::wasm_path;
use mailplug_tests::TempPath;

/// A path for one test's directory, not yet created (removed with what is in it at the end).
fn fresh_dir(name: &str) -> TempPath {
    TempPath::file(&format!("runtime-{name}"), "dir")
}

fn opts(dir: &Path) -> RuntimeOptions {
    RuntimeOptions::default().with_instances(4).with_cache_dir(Some(dir.to_path_buf()))
}

fn load(dir: &Path) -> Plugin {
    Plugin::load_with(&wasm_path(), &opts(dir)).expect("the component loads")
}

/// The instance works: the preset catalogue comes back from the guest.
async fn works(p: &Plugin) {
    let mut i = p.instantiate(64 << 20, 5000).await.expect("instance");
    let presets = i.presets().await.expect("presets");
    assert!(presets.len() > 10, "{} presets", presets.len());
}

/// A valid cache file for this component and engine, compiled once for the whole test binary;
/// each test copies it into its own directory, under the name the loader looks for.
fn valid_cache() -> &'static (String, Vec<u8>) {
    static FILE: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = fresh_dir("shared");
        let p = load(&dir);
        let CacheStatus::Written { path, replaced: None } = p.cache_status() else {
            panic!("first load: {:?}", p.cache_status())
        };
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let bytes = std::fs::read(path).expect("cache file");
        (name, bytes)
    })
}

/// `dir` holding a valid cache file (mode 0600); its path.
fn seeded(dir: &Path) -> PathBuf {
    let (name, bytes) = valid_cache();
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Loads from `dir` expecting the file at `path` to be rejected for `why` and replaced; then
/// checks the replacement is valid (the next load maps it) and the component works.
async fn replaced_because(dir: &Path, path: &Path, why: &str) {
    let p = load(dir);
    match p.cache_status() {
        CacheStatus::Written { path: written, replaced: Some(reason) } => {
            assert_eq!(written, path);
            assert!(reason.contains(why), "expected {why:?} in {reason:?}");
        }
        other => panic!("expected the file to be replaced because {why}: {other:?}"),
    }
    works(&p).await;
    assert_eq!(std::fs::read(path).expect("rewritten"), valid_cache().1, "the file was rewritten whole");
    let again = load(dir);
    assert_eq!(again.cache_status(), &CacheStatus::Loaded(path.to_path_buf()));
    works(&again).await;
}

#[tokio::test]
async fn a_missing_cache_is_compiled_written_privately_and_then_mapped() {
    let dir = fresh_dir("missing");
    let first = load(&dir);
    let CacheStatus::Written { path, replaced: None } = first.cache_status().clone() else {
        panic!("{:?}", first.cache_status())
    };
    assert_eq!(path.parent(), Some(&*dir));
    assert_eq!(std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);
    let entries: Vec<_> = std::fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(entries.len(), 1, "no temporary file left behind: {entries:?}");
    works(&first).await;

    let second = load(&dir);
    assert_eq!(second.cache_status(), &CacheStatus::Loaded(path.clone()));
    works(&second).await;
}

#[tokio::test]
async fn a_truncated_cache_is_compiled_again_and_replaced() {
    let len = valid_cache().1.len();
    // Inside the ELF header, halfway, and all but the last byte of the trailer.
    for (i, keep) in [100, len / 2, len - 1].into_iter().enumerate() {
        let dir = fresh_dir(&format!("truncated-{i}"));
        let path = seeded(&dir);
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(keep as u64).expect("truncate");
        replaced_because(&dir, &path, "truncated").await;
    }
}

#[tokio::test]
async fn an_altered_cache_is_compiled_again_and_replaced() {
    let len = valid_cache().1.len();
    // A byte in wasmtime's code and data, and one in the trailer's checksum.
    for (i, at) in [len / 3, len - 20].into_iter().enumerate() {
        let dir = fresh_dir(&format!("altered-{i}"));
        let path = seeded(&dir);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        replaced_because(&dir, &path, "checksum").await;
    }
}

/// The component with a custom section appended: another `.wasm` that compiles the same.
fn another_wasm() -> Vec<u8> {
    let mut wasm = std::fs::read(wasm_path()).expect("wasm");
    let name = b"mailplug-test";
    let payload = b"another build";
    wasm.push(0); // custom section
    wasm.push((1 + name.len() + payload.len()) as u8);
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(payload);
    wasm
}

#[tokio::test]
async fn a_stale_cache_from_another_wasm_or_engine_is_compiled_again_and_replaced() {
    // Compiled from another .wasm, found under this one's name.
    let other_dir = fresh_dir("stale-other");
    let other = Plugin::from_bytes_with(&another_wasm(), &opts(&other_dir)).expect("the other component loads");
    let CacheStatus::Written { path: other_path, .. } = other.cache_status() else { panic!("{:?}", other.cache_status()) };
    let dir = fresh_dir("stale");
    let path = seeded(&dir);
    assert_ne!(other_path.file_name(), path.file_name(), "another .wasm has another cache file");
    std::fs::copy(other_path, &path).expect("copy");
    replaced_because(&dir, &path, "compiled from another .wasm").await;

    // Made by another engine: the trailer's engine digest differs.
    let mut bytes = valid_cache().1.clone();
    let engine_field = bytes.len() - 112 + 8 + 32;
    bytes[engine_field] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    replaced_because(&dir, &path, "another wasmtime version or configuration").await;
}

#[tokio::test]
async fn a_cache_others_may_write_is_never_used() {
    // A directory others may write to: not used at all, the component is compiled in memory.
    let dir = fresh_dir("shared-dir");
    let path = seeded(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let p = load(&dir);
    match p.cache_status() {
        CacheStatus::Unused(why) => assert!(why.contains("others may write") && why.contains("not used"), "{why}"),
        other => panic!("{other:?}"),
    }
    works(&p).await;
    assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600, "left alone");

    // A file others may write to, in a private directory: replaced.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    replaced_because(&dir, &path, "only this user may write").await;
    assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);

    // A symbolic link in its place: not followed, replaced by a file.
    std::fs::remove_file(&path).expect("rm");
    let target = dir.join("elsewhere.cwasm");
    std::fs::write(&target, &valid_cache().1).expect("write");
    std::os::unix::fs::symlink(&target, &path).expect("symlink");
    replaced_because(&dir, &path, "could not be read").await;
    assert!(!std::fs::symlink_metadata(&path).expect("meta").file_type().is_symlink());
}

fn bin() -> PathBuf {
    std::env::var("MAILPLUG_BIN").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/var/tmp/mailplug-target/debug/mailplug"))
}

fn cli(cache: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("MAILPLUG_WASM", wasm_path())
        .env("MAILPLUG_CACHE_DIR", cache)
        .output()
        .expect("mailplug runs")
}

#[test]
fn mailplug_compile_fills_the_cache_that_later_commands_map() {
    let dir = fresh_dir("cli");
    let d = dir.to_str().expect("utf-8");
    let out = cli(d, &["compile"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("compiled ") && text.contains(d), "{text} {}", String::from_utf8_lossy(&out.stderr));
    let files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let written = std::fs::metadata(&files[0]).expect("meta").modified().expect("mtime");

    let out = cli(d, &["compile"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("is already compiled") && text.contains(&*files[0].to_string_lossy()), "{text}");

    let out = cli(d, &["presets", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imap.gmail.com"));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(&files[0]).expect("meta").modified().expect("mtime"), written, "mapped, not rewritten");

    // A cache that is off: `compile` says how to turn it on; other commands just compile.
    let out = cli("", &["compile"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MAILPLUG_CACHE_DIR"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli("", &["presets", "--json"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_full_pool_is_a_clear_error_until_an_instance_ends() {
    let dir = fresh_dir("pool-full");
    let p = Plugin::load_with(&wasm_path(), &opts(&dir).with_instances(2)).expect("load");
    assert!(matches!(p.allocation(), Allocation::Pool { instances: 2, .. }), "{:?}", p.allocation());
    let a = p.instantiate(64 << 20, 1000).await.expect("first");
    let _b = p.instantiate(64 << 20, 1000).await.expect("second");
    let e = p.instantiate(64 << 20, 1000).await.err().expect("no third slot");
    assert!(matches!(e, mailplug_host::HostError::PoolFull(2)), "{e:?}");
    assert!(e.to_string().contains("all 2 component instances this host allows at once are in use"), "{e}");
    drop(a);
    let mut c = p.instantiate(64 << 20, 1000).await.expect("a slot is free again");
    assert!(!c.presets().await.expect("presets").is_empty());
}

#[tokio::test]
async fn a_memory_cap_larger_than_a_pool_slot_is_a_clear_error() {
    let dir = fresh_dir("pool-slot");
    let p = Plugin::load_with(&wasm_path(), &RuntimeOptions { max_memory_bytes: 64 << 20, ..opts(&dir) }).expect("load");
    assert!(matches!(p.allocation(), Allocation::Pool { slot_bytes, .. } if *slot_bytes == 64 << 20), "{:?}", p.allocation());
    let e = p.instantiate(128 << 20, 1000).await.err().expect("128 MB does not fit a 64 MB slot");
    let text = e.to_string();
    assert!(text.contains("memory limit of 128 MB") && text.contains("(64 MB)") && text.contains("limits.guest_memory_mb"), "{text}");
    works(&p).await;
}

#[tokio::test]
async fn an_instance_in_a_reused_slot_starts_with_only_its_initial_memory() {
    let dir = fresh_dir("pool-reuse");
    // One slot: the second instance must reuse the first one's.
    let p = Plugin::load_with(&wasm_path(), &opts(&dir).with_instances(1)).expect("load");
    let draft = |body: String| Draft {
        from: "support@example.com".into(),
        to: vec!["customer@example.com".into()],
        subject: "big".into(),
        text_body: body,
        date: 1_700_000_000_000,
    };
    let mut first = p.instantiate(256 << 20, 20_000).await.expect("first");
    let initial = first.memory_peak_bytes();
    assert!(initial > 0 && initial < 8 << 20, "initial memory {initial}");
    first.compose(&draft("word ".repeat(2 << 20))).await.expect("a 10 MB body composes");
    let grown = first.memory_peak_bytes();
    assert!(grown > 16 << 20, "composing 10 MB grows the memory: {grown}");
    drop(first);

    let mut second = p.instantiate(256 << 20, 20_000).await.expect("the slot is reused");
    assert_eq!(second.memory_peak_bytes(), initial, "a fresh memory, not the last tenant's");
    let m = second.compose(&draft("hello".into())).await.expect("compose");
    assert!(m.message_id.contains('@'));
}
