//! The raw bytes of stored messages, outside SQLite: append-only segment files in the folder
//! `<database>-raw` beside the database (mode 0700, files 0600), named `<number>.seg`.
//!
//! SQLite keeps each message's metadata and parsed fields, and where its bytes are (segment
//! number, offset; the length is the row's `size`). Written this way the bytes go to disk once:
//! in the database they were written to the WAL, then again into the database file by the
//! checkpoint, both on the session's critical path (docs/BENCHMARKS.md).
//!
//! Durability: a writer appends each new message to its segment (gathered in memory and written
//! a megabyte at a time) and, at commit, writes what is gathered and syncs the segment
//! (`fdatasync`) *before* the SQLite commit that references it; a new segment's folder entry is
//! synced when it is created. A write that fails fails every sync until the transaction is
//! rolled back (`lost`). So a row never refers to bytes that are not on disk, and
//! a crash or power cut between the two leaves only unreferenced bytes at a segment's end,
//! which later writers append after. Each writer holds an exclusive lock on its segment (in one
//! process every sink of a database goes through one writer; two processes never append to the
//! same file).

use std::fs::{self, File};
use std::io::{IoSlice, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::HostError;

/// A segment takes new messages until it holds this many bytes (a larger message still fits).
const SEGMENT_BYTES: u64 = 256 << 20;

/// Appends are gathered in memory and written to the segment this much at a time (and at every
/// sync), each followed by `start_writeback`: one `write` per megabyte instead of one per
/// message costs the kernel less per byte (session 14, docs/BENCHMARKS.md). A message at least
/// this large is written on its own.
const PENDING_BYTES: usize = 1 << 20;

/// The folder of a database's segments: `<database>-raw`.
pub fn folder(database: &Path) -> PathBuf {
    PathBuf::from(format!("{}-raw", database.display()))
}

fn file_name(id: i64) -> String {
    format!("{id:06}.seg")
}

fn io_err(what: String) -> impl Fn(std::io::Error) -> HostError {
    move |e| HostError::Storage(format!("{what}: {e}"))
}

/// The segment a writer appends to.
struct Open {
    id: i64,
    file: File,
    len: u64,
    /// Appended to since the last `sync`.
    dirty: bool,
}

/// Appends one writer's messages to a segment it holds locked; see the module doc.
pub(super) struct SegmentWriter {
    dir: PathBuf,
    open: Option<Open>,
    /// Appended bytes not written to the segment yet (`PENDING_BYTES`).
    pending: Vec<u8>,
    /// A write failed in the open transaction: bytes of appends that were answered are lost, so
    /// every `sync` fails with this until `rolled_back`, and the commit that would refer to
    /// them is not made.
    lost: Option<String>,
}

impl SegmentWriter {
    pub(super) fn new(database: &Path) -> SegmentWriter {
        SegmentWriter { dir: folder(database), open: None, pending: Vec::new(), lost: None }
    }

    /// Appends `parts` one after the other (a message's raw bytes, then its bodies); returns
    /// (segment number, offset of the first part). Not durable before `sync`.
    pub(super) fn append(&mut self, parts: &[&[u8]]) -> Result<(i64, u64), HostError> {
        if self.open.as_ref().is_some_and(|o| o.len >= SEGMENT_BYTES) {
            // Full: made durable now (the next commit syncs only the new one), then let go.
            self.sync()?;
            self.open = None;
        }
        if self.open.is_none() {
            self.open = Some(self.acquire()?);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if self.pending.len() + total > PENDING_BYTES {
            self.write_pending()?;
        }
        let Some(o) = self.open.as_mut() else { return Err(HostError::Storage("no message segment open".into())) };
        let at = o.len;
        if total >= PENDING_BYTES {
            if let Err(e) = write_all_vectored(&mut o.file, parts) {
                return Err(self.failed(e));
            }
            start_writeback(&o.file);
        } else {
            if self.pending.capacity() == 0 {
                // Once per batch, and never more (it is written out before it would grow).
                self.pending.reserve_exact(PENDING_BYTES);
            }
            parts.iter().for_each(|p| self.pending.extend_from_slice(p));
        }
        o.len += total as u64;
        o.dirty = true;
        Ok((o.id, at))
    }

    /// Writes the gathered appends to the segment (so they can be read back) and starts their
    /// write-back.
    pub(super) fn write_pending(&mut self) -> Result<(), HostError> {
        let Some(o) = self.open.as_mut().filter(|_| !self.pending.is_empty()) else { return Ok(()) };
        if let Err(e) = o.file.write_all(&self.pending) {
            return Err(self.failed(e));
        }
        self.pending.clear();
        start_writeback(&o.file);
        Ok(())
    }

    /// A write to the open segment failed: part of it may be written, so the length is read
    /// afresh from the file next time; the appends not written are lost (see `lost`).
    fn failed(&mut self, e: std::io::Error) -> HostError {
        let id = self.open.take().map_or(0, |o| o.id);
        self.pending.clear();
        let why = format!("cannot write {}: {e}", self.dir.join(file_name(id)).display());
        self.lost = Some(why.clone());
        HostError::Storage(why)
    }

    /// The transaction the appends since the last sync belong to was rolled back: nothing
    /// refers to lost bytes any more.
    pub(super) fn rolled_back(&mut self) {
        self.lost = None;
        self.pending.clear();
    }

    /// Makes everything appended so far durable (before the commit that refers to it).
    pub(super) fn sync(&mut self) -> Result<(), HostError> {
        self.write_pending()?;
        // Between batches a writer holds no buffer (`mailplug serve` keeps many writers).
        self.pending = Vec::new();
        if let Some(why) = &self.lost {
            return Err(HostError::Storage(why.clone()));
        }
        if let Some(o) = self.open.as_mut().filter(|o| o.dirty) {
            o.file.sync_data().map_err(io_err(format!("cannot sync {}", self.dir.join(file_name(o.id)).display())))?;
            o.dirty = false;
        }
        Ok(())
    }

    /// Opens a segment with room that no other writer holds, or creates the next one.
    fn acquire(&self) -> Result<Open, HostError> {
        crate::private_files::create_dir(&self.dir)?;
        let mut ids = segment_ids(&self.dir)?;
        ids.sort_unstable_by(|a, b| b.cmp(a));
        for &id in ids.iter().take(8) {
            let path = self.dir.join(file_name(id));
            let Ok(file) = fs::OpenOptions::new().append(true).open(&path) else { continue };
            let Ok(meta) = file.metadata() else { continue };
            if meta.len() < SEGMENT_BYTES && file.try_lock().is_ok() {
                // Read the length only once locked: no one else appends from now on.
                let len = file.metadata().map_err(io_err(format!("cannot read {}", path.display())))?.len();
                return Ok(Open { id, file, len, dirty: false });
            }
        }
        let mut id = ids.first().copied().unwrap_or(0) + 1;
        loop {
            let path = self.dir.join(file_name(id));
            match fs::OpenOptions::new().append(true).create_new(true).mode(0o600).open(&path) {
                // Another writer may have locked it between the creation and here: the next one.
                Ok(file) if file.try_lock().is_ok() => {
                    // The new file's folder entry is durable before any commit refers to it.
                    File::open(&self.dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io_err(format!("cannot sync the folder {}", self.dir.display())))?;
                    return Ok(Open { id, file, len: 0, dirty: false });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(HostError::Storage(format!("cannot create {}: {e}", path.display()))),
            }
            id += 1;
        }
    }
}

/// The numbers of the segments in `dir`.
fn segment_ids(dir: &Path) -> Result<Vec<i64>, HostError> {
    let entries = fs::read_dir(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse::<i64>().ok())
        .filter(|&id| id > 0)
        .collect())
}

/// Asks the kernel to start writing the file's dirty pages now, without waiting, so the sync
/// at commit finds most of them written. Durability is unchanged: the commit still syncs.
pub(super) fn start_writeback(f: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only starts write-back of its pages.
        unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

/// Writes every part, in order, with as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut File, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts.iter().filter(|p| !p.is_empty()).map(|p| IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a failed read of a row's segment bytes says: where, and that the folder belongs to
/// the database.
fn unreadable(database: &Path, row: i64, segment: i64, why: String) -> HostError {
    let dir = folder(database);
    let path = dir.join(file_name(segment));
    HostError::Storage(format!(
        "the bytes of stored message db:{row} cannot be read from {} ({why}); the folder {} holds the stored messages' \
         bytes and belongs to the database (keep and back it up together with it) / die Rohdaten der gespeicherten \
         Nachricht db:{row} sind in {} nicht lesbar ({why}); der Ordner {} gehört zur Datenbank (mit ihr aufbewahren \
         und sichern)",
        path.display(),
        dir.display(),
        path.display(),
        dir.display()
    ))
}

/// `size` bytes at `offset` of a segment, unchecked.
fn read_range(database: &Path, row: i64, segment: i64, offset: i64, size: i64) -> Result<Vec<u8>, HostError> {
    let (offset, size) = match (u64::try_from(offset), usize::try_from(size)) {
        (Ok(o), Ok(s)) => (o, s),
        _ => return Err(unreadable(database, row, segment, "the row's offset or size is negative".into())),
    };
    let path = folder(database).join(file_name(segment));
    let file = File::open(&path).map_err(|e| unreadable(database, row, segment, e.to_string()))?;
    let mut raw = vec![0u8; size];
    file.read_exact_at(&mut raw, offset).map_err(|e| unreadable(database, row, segment, e.to_string()))?;
    Ok(raw)
}

/// Reads a message's bytes back and checks them against the row's CRC-32 (version 4) or
/// SHA-256 (version 3): a missing, truncated or altered segment is an error that says where,
/// never other bytes.
pub(super) fn read(database: &Path, row: i64, at: &super::RawAt) -> Result<Vec<u8>, HostError> {
    let raw = read_range(database, row, at.segment, at.offset, at.size)?;
    let same = match (at.check, &at.hash) {
        (Some(c), _) => crc_check(&[&raw]) == c,
        (None, Some(h)) => super::content_hash(&raw) == *h,
        (None, None) => true,
    };
    if !same {
        return Err(unreadable(database, row, at.segment, "the bytes there differ from what was stored".into()));
    }
    Ok(raw)
}

/// The CRC-32 of parts of a segment (schema version 4: a message's raw bytes; its bodies,
/// which follow them): checked when they are read back, so altered bytes are an error. Only
/// an integrity check: what identifies content is the SHA-256 (`content_hash`).
pub(super) fn crc_check(parts: &[&[u8]]) -> i64 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    i64::from(h.finalize())
}

/// Reads the text and HTML bodies stored after a message's raw bytes (`text_len` and
/// `html_len` bytes, None for a body the message does not have) and checks them.
pub(super) fn read_bodies(database: &Path, row: i64, at: &super::BodiesAt) -> Result<(Option<String>, Option<String>), HostError> {
    let (t, h) = (at.text_len.unwrap_or(0), at.html_len.unwrap_or(0));
    let both = read_range(database, row, at.segment, at.offset.saturating_add(at.size), t.saturating_add(h))?;
    let (text, html) = both.split_at(usize::try_from(t).unwrap_or(0).min(both.len()));
    if crc_check(&[text, html]) != at.check {
        return Err(unreadable(database, row, at.segment, "the bodies there differ from what was stored".into()));
    }
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| unreadable(database, row, at.segment, "a body there is not UTF-8".into()));
    Ok((at.text_len.map(|_| utf8(text)).transpose()?, at.html_len.map(|_| utf8(html)).transpose()?))
}
