//! The compile cache's tests: what is loaded, refused and compiled again, and the stamp.

use super::*;
use std::os::unix::fs::PermissionsExt;

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
fn a_stamp_reads_back_only_whole_and_unaltered() {
    let ident = |n: u64| Ident { dev: n, ino: n + 1, size: n + 2, mtime: (n as i64, 3), ctime: (n as i64, 4) };
    let stamp = Stamp { wasm: ident(10), cache: ident(20), wasm_digest: [7; 32] };
    let bytes = stamp.encode();
    assert_eq!(bytes.len(), STAMP_LEN);
    assert_eq!(Stamp::decode(&bytes), Some(stamp));
    for at in [0, 9, 8 + Ident::LEN + 3, STAMP_LEN - 40, STAMP_LEN - 1] {
        let mut altered = bytes.clone();
        altered[at] ^= 1;
        assert_eq!(Stamp::decode(&altered), None, "byte {at} altered");
    }
    assert_eq!(Stamp::decode(&bytes[..STAMP_LEN - 1]), None);
    let settled = Ident { mtime: (100, 0), ctime: (101, 500), ..ident(1) };
    let ns = |s: i128| s * 1_000_000_000;
    assert!(!settled.settled(ns(102)), "changed 0.5 s before");
    assert!(settled.settled(ns(103) + 500), "changed 2 s before");
    assert!(!Ident { mtime: (104, 0), ..settled }.settled(ns(103) + 500), "the later of the two times counts");
}

/// A private temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("mailplug-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::DirBuilder::new().mode(0o700).create(&p).expect("dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_stamp_skips_the_hashes_only_while_neither_file_changed() {
    let engine = Engine::default();
    let digest = engine_digest(&engine);
    let tmp = TempDir::new("stamp");
    let cache = tmp.0.join("cache");
    let wasm_path = tmp.0.join("c.wasm");
    // The empty component: compiled in milliseconds.
    let wasm: &[u8] = b"\0asm\x0d\0\x01\0";
    fs::write(&wasm_path, wasm).expect("wasm");
    let later = || now_ns() + 3 * 1_000_000_000;
    let ident = || Ident::of(&fs::metadata(&wasm_path).expect("meta"));
    let stamps = || fs::read_dir(&cache).expect("dir").filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "stamp")).count();

    // Fresh files: checked in full, no stamp.
    let (_, status) = component_from_file(&engine, &wasm_path, Some(&cache)).expect("load");
    let CacheStatus::Written { path, replaced: None } = status else { panic!("{status:?}") };
    let (_, status) = component_from_file(&engine, &wasm_path, Some(&cache)).expect("load");
    assert_eq!(status, CacheStatus::Loaded(path.clone()));
    assert_eq!(stamps(), 0, "files changed within SETTLED get no stamp");
    assert!(load_stamped(&engine, &cache, &digest, &ident()).is_none());

    // Settled (a clock 3 s ahead): the full check writes a stamp, then the fast path maps.
    let (_, status) = component_from_file_at(&engine, &wasm_path, Some(&cache), later()).expect("load");
    assert_eq!(status, CacheStatus::Loaded(path.clone()));
    assert_eq!(stamps(), 1);
    let (_, fast) = load_stamped(&engine, &cache, &digest, &ident()).expect("the stamp vouches for both files");
    assert_eq!(fast, path);
    assert!(load_stamped(&engine, &cache, &[9; 32], &ident()).is_none(), "another engine has another stamp");

    // The cache file altered in place (same size): its identity changed, so the fast path
    // declines and the full check finds the alteration.
    // The kernel's file times advance in ticks of a few milliseconds: the real files here
    // are not settled (the clock above is faked), so each change waits for a later tick,
    // as SETTLED makes sure outside tests.
    let tick = || std::thread::sleep(Duration::from_millis(20));
    tick();
    let mut bytes = fs::read(&path).expect("read");
    // The same bytes written again: nothing but the identity tells.
    fs::write(&path, &bytes).expect("write");
    assert!(load_stamped(&engine, &cache, &digest, &ident()).is_none(), "a rewritten cache file is not vouched for");
    bytes[TRAILER_LEN] ^= 0x40;
    fs::write(&path, &bytes).expect("write");
    assert!(load_stamped(&engine, &cache, &digest, &ident()).is_none());
    let (_, status) = component_from_file_at(&engine, &wasm_path, Some(&cache), later()).expect("load");
    assert!(matches!(&status, CacheStatus::Written { replaced: Some(why), .. } if why.contains("checksum")), "{status:?}");

    // Settled again, stamped again; then the .wasm rewritten with the same bytes: declined.
    component_from_file_at(&engine, &wasm_path, Some(&cache), later()).expect("load");
    assert!(load_stamped(&engine, &cache, &digest, &ident()).is_some());
    let before = ident();
    tick();
    fs::write(&wasm_path, wasm).expect("rewrite");
    assert_ne!(ident(), before);
    assert!(load_stamped(&engine, &cache, &digest, &ident()).is_none());

    // A damaged stamp is ignored.
    component_from_file_at(&engine, &wasm_path, Some(&cache), later()).expect("load");
    let stamp = stamp_path(&cache, &digest, &ident());
    assert!(load_stamped(&engine, &cache, &digest, &ident()).is_some());
    let mut s = fs::read(&stamp).expect("stamp");
    s[20] ^= 1;
    fs::write(&stamp, &s).expect("write");
    assert!(load_stamped(&engine, &cache, &digest, &ident()).is_none());
    // A stamp others may write is not used.
    component_from_file_at(&engine, &wasm_path, Some(&cache), later()).expect("load");
    assert!(load_stamped(&engine, &cache, &digest, &ident()).is_some());
    fs::set_permissions(&stamp, fs::Permissions::from_mode(0o666)).expect("chmod");
    assert!(load_stamped(&engine, &cache, &digest, &ident()).is_none());
}

#[test]
fn file_names_follow_the_component_and_the_engine() {
    let a = key().file_name();
    assert!(a.starts_with("mailplug-") && a.ends_with(".cwasm") && a.len() == "mailplug-.cwasm".len() + 32, "{a}");
    assert_ne!(a, Key { wasm: [3; 32], ..key() }.file_name());
    assert_ne!(a, Key { engine: [3; 32], ..key() }.file_name());
}
