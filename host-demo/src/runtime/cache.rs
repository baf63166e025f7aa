//! The compile cache: the component compiled by Cranelift once, kept in a file, and
//! memory-mapped by later processes instead of being compiled again (about a second of CPU).
//!
//! # Why loading it is `unsafe`, and what makes this use sound
//!
//! `Component::deserialize_file` is `unsafe` because the file is native machine code: wasmtime
//! maps it executable and calls into it, checking only its ELF header (the wasmtime version
//! and the engine settings the code was compiled for), never the code itself. A file that was
//! altered, damaged, or compiled from another component would run as ours, outside every
//! guarantee of the sandbox. A cache file is therefore used only when all of this holds:
//!
//! 1. **Ours alone.** The directory belongs to this user and nobody else may write to it
//!    (made with mode 0700; an existing one owned by another user or writable by group or
//!    others is not used at all); the file is a regular file of this user, not writable by
//!    group or others, opened without following a symbolic link.
//! 2. **Made by this engine from this `.wasm`.** A trailer after wasmtime's bytes holds the
//!    SHA-256 of the `.wasm` it was compiled from, a SHA-256 of this engine's
//!    `precompile_compatibility_hash` (wasmtime version, target, compiler flags, tunables,
//!    wasm features), and the length and SHA-256 of wasmtime's bytes. All must match the
//!    `.wasm` being loaded, the running engine and the bytes actually read, so a stale,
//!    truncated or altered file is never mapped.
//! 3. **The bytes checked are the bytes mapped.** The checksum is computed over the open file,
//!    and wasmtime maps that same open file (`/proc/self/fd/N` on Linux); files are only ever
//!    replaced whole (temporary file, fsync, rename), never written in place.
//! 4. wasmtime's own header check still applies after ours.
//!
//! Anything else (no file, another component or engine, truncated, altered, unreadable)
//! compiles the component from the `.wasm` again and replaces the file. A file that passes
//! these checks and is still refused by wasmtime (a file system mounted noexec, say) is left
//! alone and the component compiled in memory. Someone who can write this user's files can also replace the `.wasm` or the
//! binary itself; the checks make sure the cache adds no way in beyond that.
//!
//! The file is written with mode 0600: only the user that runs mailplug needs it, and a
//! cache shared between users would let one of them run code in the other's processes.

use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::digest::{digest, Context, SHA256};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::error::HostError;

const MAGIC: [u8; 8] = *b"mpcwasm1";
/// Magic, the .wasm's SHA-256, the engine's SHA-256, the payload's SHA-256 and length.
pub(super) const TRAILER_LEN: usize = 8 + 32 + 32 + 32 + 8;

/// What a cache file must have been made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    wasm: [u8; 32],
    engine: [u8; 32],
}

impl Key {
    pub(super) fn new(engine: &Engine, wasm: &[u8]) -> Key {
        Key { wasm: sha256(wasm), engine: engine_digest(engine) }
    }

    /// One file per (component, engine) pair.
    fn file_name(&self) -> String {
        let mut both = Vec::with_capacity(64);
        both.extend_from_slice(&self.wasm);
        both.extend_from_slice(&self.engine);
        format!("mailplug-{}.cwasm", hex(&sha256(&both)[..16]))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds what wasmtime hashes for compatibility into SHA-256 (std's hashers are not stable
/// across Rust releases; a changed digest would only cost a recompile, but a wider one is
/// also collision-proof).
struct Sha256Hasher(Context);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// Not used: the digest is taken from the context.
    fn finish(&self) -> u64 {
        0
    }
}

fn engine_digest(engine: &Engine) -> [u8; 32] {
    use std::hash::Hash;
    let mut h = Sha256Hasher(Context::new(&SHA256));
    engine.precompile_compatibility_hash().hash(&mut h);
    let mut out = [0u8; 32];
    out.copy_from_slice(h.0.finish().as_ref());
    out
}

/// What happened to the cache when the component was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// The compiled component was mapped from this file.
    Loaded(PathBuf),
    /// The component was compiled and this file written; `replaced` says why the file that
    /// was there could not be used.
    Written { path: PathBuf, replaced: Option<String> },
    /// The component was compiled; the cache could not be used, for this reason.
    Unused(String),
    /// The component was compiled; no cache directory is configured.
    Off,
}

/// The cache directory: `$MAILPLUG_CACHE_DIR` (set but empty: no cache), else
/// `$XDG_CACHE_HOME/mailplug`, else `$HOME/.cache/mailplug`; relative paths are not used.
pub fn default_dir() -> Option<PathBuf> {
    let absolute = |p: PathBuf| p.is_absolute().then_some(p);
    if let Some(dir) = std::env::var_os("MAILPLUG_CACHE_DIR") {
        return if dir.is_empty() { None } else { absolute(PathBuf::from(dir)) };
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        if let Some(p) = absolute(PathBuf::from(xdg)) {
            return Some(p.join("mailplug"));
        }
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).and_then(|h| absolute(PathBuf::from(h).join(".cache").join("mailplug")))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `dir` (mode 0700) if needed and checks that only this user can write to it.
fn private_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the compile cache directory {}: {e}", dir.display()))?;
    let meta = fs::metadata(dir).map_err(|e| format!("cannot read the compile cache directory {}: {e}", dir.display()))?;
    if meta.uid() != euid() || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the compile cache directory {} belongs to another user or others may write to it (mode {:04o}); \
             compiled code is loaded from there, so it is not used: make it private (`chmod 700`) or set MAILPLUG_CACHE_DIR",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Why a cache file was not used.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reject {
    Absent,
    Unsafe(String),
    Unreadable(String),
    Truncated,
    OtherComponent,
    OtherEngine,
    Altered,
    RefusedByWasmtime(String),
}

impl Reject {
    fn reason(&self) -> String {
        match self {
            Reject::Absent => "there was none".into(),
            Reject::Unsafe(why) => why.clone(),
            Reject::Unreadable(e) => format!("it could not be read ({e})"),
            Reject::Truncated => "it was truncated (its length does not match its trailer, or it has none)".into(),
            Reject::OtherComponent => "it was compiled from another .wasm".into(),
            Reject::OtherEngine => "it was compiled by another wasmtime version or configuration".into(),
            Reject::Altered => "its content did not match its checksum (altered or damaged)".into(),
            Reject::RefusedByWasmtime(e) => format!("wasmtime refused it ({e})"),
        }
    }
}

/// Checks `file` (whole: payload and trailer) against `key`; the payload's length if it is
/// what this engine made from this `.wasm`.
pub(super) fn verify(file: &[u8], key: &Key) -> Result<usize, Reject> {
    if file.len() < TRAILER_LEN {
        return Err(Reject::Truncated);
    }
    let (payload, trailer) = file.split_at(file.len() - TRAILER_LEN);
    if trailer[..8] != MAGIC {
        // A cut-off file ends inside wasmtime's bytes, where no trailer is.
        return Err(Reject::Truncated);
    }
    let field = |i: usize| &trailer[8 + 32 * i..8 + 32 * (i + 1)];
    let len = u64::from_le_bytes(trailer[104..112].try_into().map_err(|_| Reject::Truncated)?);
    if len != payload.len() as u64 {
        return Err(Reject::Truncated);
    }
    if field(0) != key.wasm {
        return Err(Reject::OtherComponent);
    }
    if field(1) != key.engine {
        return Err(Reject::OtherEngine);
    }
    if field(2) != sha256(payload) {
        return Err(Reject::Altered);
    }
    Ok(payload.len())
}

fn trailer(key: &Key, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(TRAILER_LEN);
    t.extend_from_slice(&MAGIC);
    t.extend_from_slice(&key.wasm);
    t.extend_from_slice(&key.engine);
    t.extend_from_slice(&sha256(payload));
    t.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    t
}

/// Opens, checks and maps the cache file at `path`.
fn load(engine: &Engine, path: &Path, key: &Key) -> Result<Component, Reject> {
    let mut file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Reject::Absent),
        Err(e) => return Err(Reject::Unreadable(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| Reject::Unreadable(e.to_string()))?;
    if !meta.is_file() || meta.uid() != euid() || meta.mode() & 0o022 != 0 {
        return Err(Reject::Unsafe(format!(
            "it was not a regular file of this user that only this user may write (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(|e| Reject::Unreadable(e.to_string()))?;
    verify(&bytes, key)?;
    drop(bytes);
    map(engine, &file, path).map_err(|e| Reject::RefusedByWasmtime(super::first_line(&format!("{e:#}")).to_string()))
}

/// Maps the open, checked `file` with wasmtime. The trailer after wasmtime's bytes is not
/// part of its ELF image: ELF locates everything from the header, so bytes past the last
/// section are never read.
fn map(engine: &Engine, file: &File, path: &Path) -> wasmtime::Result<Component> {
    #[cfg(target_os = "linux")]
    let same_file = {
        use std::os::fd::AsRawFd;
        let p = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if p.exists() { p } else { path.to_path_buf() }
    };
    #[cfg(not(target_os = "linux"))]
    let same_file = {
        let _ = file;
        path.to_path_buf()
    };
    // SAFETY: see the module documentation: the file is this user's alone, was just checked
    // to hold exactly what this engine compiled from this .wasm (SHA-256 of the .wasm, of the
    // engine's compatibility hash and of these bytes), is the same open file that was checked,
    // and cache files are never modified in place, only replaced by rename.
    unsafe { Component::deserialize_file(engine, same_file) }
}

/// Writes `payload` and its trailer to `path` atomically: a temporary file in the same
/// directory (mode 0600), fsync, rename over the old file, fsync of the directory.
fn write(dir: &Path, path: &Path, key: &Key, payload: &[u8]) -> Result<(), String> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("mailplug.cwasm");
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let r = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
        f.write_all(payload)?;
        f.write_all(&trailer(key, payload))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map_err(|e| format!("cannot write the compile cache {}: {e}", path.display()))
}

/// The component for `wasm`: mapped from the cache in `dir` when a valid file is there,
/// otherwise compiled (and the cache file written).
pub(super) fn component(engine: &Engine, wasm: &[u8], dir: Option<&Path>) -> Result<(Component, CacheStatus), HostError> {
    let Some(dir) = dir else {
        return Ok((compile(engine, wasm)?, CacheStatus::Off));
    };
    if let Err(why) = private_dir(dir) {
        return Ok((compile(engine, wasm)?, CacheStatus::Unused(why)));
    }
    let key = Key::new(engine, wasm);
    let path = dir.join(key.file_name());
    let replaced = match load(engine, &path, &key) {
        Ok(c) => return Ok((c, CacheStatus::Loaded(path))),
        Err(Reject::Absent) => None,
        Err(Reject::RefusedByWasmtime(e)) => {
            // The file passed every check, so writing it again would not help: most likely the
            // file system does not allow executable mappings.
            let why = format!(
                "wasmtime could not map {} ({e}); if its file system is mounted noexec, set MAILPLUG_CACHE_DIR to another directory",
                path.display()
            );
            return Ok((compile(engine, wasm)?, CacheStatus::Unused(why)));
        }
        Err(r) => Some(r.reason()),
    };
    let payload = engine
        .precompile_component(wasm)
        .map_err(|e| HostError::Plugin(format!("the component does not compile: {e}")))?;
    // SAFETY: these bytes were produced just now, in memory, by this engine from `wasm`.
    let component = unsafe { Component::deserialize(engine, &payload) }
        .map_err(|e| HostError::Plugin(format!("the component does not load: {e}")))?;
    let status = match write(dir, &path, &key, &payload) {
        Ok(()) => CacheStatus::Written { path, replaced },
        Err(why) => CacheStatus::Unused(why),
    };
    Ok((component, status))
}

fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component, HostError> {
    Component::new(engine, wasm).map_err(|e| HostError::Plugin(format!("the component does not load: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key { wasm: [1; 32], engine: [2; 32] }
    }

    fn file(payload: &[u8]) -> Vec<u8> {
        let mut f = payload.to_vec();
        f.extend_from_slice(&trailer(&key(), payload));
        f
    }

    #[test]
    fn only_a_file_made_from_this_wasm_by_this_engine_verifies() {
        let good = file(b"\x7fELF code");
        assert_eq!(verify(&good, &key()), Ok(9));
        assert_eq!(verify(&good, &Key { wasm: [9; 32], ..key() }), Err(Reject::OtherComponent));
        assert_eq!(verify(&good, &Key { engine: [9; 32], ..key() }), Err(Reject::OtherEngine));
    }

    #[test]
    fn truncated_and_altered_files_are_rejected() {
        let good = file(b"\x7fELF code");
        for cut in [0, 1, TRAILER_LEN - 1, TRAILER_LEN, good.len() - 1] {
            assert_eq!(verify(&good[..cut], &key()), Err(Reject::Truncated), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.insert(0, 0);
        assert_eq!(verify(&longer, &key()), Err(Reject::Truncated), "the length is checked");
        let mut altered = good.clone();
        altered[4] ^= 1;
        assert_eq!(verify(&altered, &key()), Err(Reject::Altered));
    }

    #[test]
    fn file_names_follow_the_component_and_the_engine() {
        let a = key().file_name();
        assert!(a.starts_with("mailplug-") && a.ends_with(".cwasm") && a.len() == "mailplug-.cwasm".len() + 32, "{a}");
        assert_ne!(a, Key { wasm: [3; 32], ..key() }.file_name());
        assert_ne!(a, Key { engine: [3; 32], ..key() }.file_name());
    }
}
