//! The write-ahead log: append-only segment files of CRC-checked records with
//! group commit. One writer thread takes every request that arrived while
//! the previous `fdatasync` ran, writes them, syncs once, then reports them
//! all durable. A torn tail (a crash mid-write) is detected on open and cut.
//!
//! Segment: [`MAGIC`], then records
//! `len: u32 LE | crc32(len): u32 LE | crc32(kind + body): u32 LE | kind: u8 | body`.
//! The length has a checksum of its own: a record at the end that reaches
//! past the end of the file is torn only if its length is intact; a damaged
//! length is corruption (it would otherwise hide as a torn tail and cut
//! acknowledged entries). A whole last record failing its checksum is torn
//! only if one of its sectors reads as zeros (never written); otherwise a
//! bit flipped in an acknowledged record, refused. Segments of the first format (no magic, records
//! `len | crc32(kind + body) | kind | body`) are still replayed, and a log
//! whose tail segment has that format continues in a new segment.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Record kinds.
const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_PURGE: u8 = 3;

/// The first bytes of a segment in the current format. Read as a first-format
/// length (`u32` LE) they exceed any record that format ever framed.
pub const MAGIC: [u8; 8] = *b"FSW\xffAL2\n";

/// Header bytes before a record's kind: length, its checksum, the record's checksum.
const HEADER: usize = 12;

/// The on-disk layout of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// No magic: `len | crc | kind | body`, the length unchecked.
    First,
    /// [`MAGIC`], then `len | crc32(len) | crc | kind | body`.
    Checked,
}

impl Format {
    /// Header bytes before the kind.
    fn header(self) -> usize {
        match self {
            Format::First => 8,
            Format::Checked => HEADER,
        }
    }
}

/// Largest record body (kind + payload) the 32-bit length can frame. Replay
/// accepts any length up to this that the segment actually holds (it reads
/// the segment first, so a corrupt length cannot make it allocate), and a
/// record that passes its checksum is always kept; `--max-entry-bytes` is
/// capped well below this (config::MAX_ENTRY_BYTES_CEILING).
pub const MAX_RECORD: usize = u32::MAX as usize;

// The largest entry `--max-entry-bytes` admits, with its index and header, fits a record.
const _: () = assert!(crate::config::MAX_ENTRY_BYTES_CEILING + 17 < MAX_RECORD as u64);

/// When the log reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before a write is reported durable (the default).
    Always,
    /// Report after the OS has the bytes; `fdatasync` at most once a second.
    /// A crash of the process loses nothing; a power loss can lose up to a second.
    EverySec,
}

/// A replayed log: entries by index (opaque bytes) and the purge point.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Entry bodies by log index.
    pub entries: BTreeMap<u64, Vec<u8>>,
    /// Body of the last purge record (the purged log id), if any.
    pub purged: Option<Vec<u8>>,
    /// Bytes cut from a torn tail.
    pub torn_bytes: u64,
}

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O error.
    #[error("write-ahead log {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        source: io::Error,
    },
    /// A record in a sealed segment failed its checksum.
    #[error("write-ahead log {path} is corrupt at byte {offset}: {why}")]
    Corrupt {
        /// Segment.
        path: PathBuf,
        /// Offset of the bad record.
        offset: u64,
        /// What was wrong.
        why: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A callback told when a request is durable (or failed).
pub type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

enum Job {
    /// Append these framed records.
    Write {
        bytes: Vec<u8>,
        last_index: Option<u64>,
        done: Option<Done>,
    },
    /// Delete sealed segments whose entries are all at or below `upto`.
    DropSegments { upto: u64 },
    /// Sync, then stop.
    Close { done: mpsc::Sender<()> },
}

/// Handle to the log's writer thread.
pub struct Wal {
    tx: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wal")
    }
}

/// Frames one record. A body the length field cannot describe is refused,
/// never written with a wrapped length (which replay would cut as torn).
pub fn frame(kind: u8, body: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let len = u32::try_from(body.len() + 1)
        .ok()
        .filter(|&l| l as usize <= MAX_RECORD)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a write-ahead log record of {} bytes exceeds the largest the log can frame ({MAX_RECORD})",
                    body.len() + 1
                ),
            )
        })?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(body);
    let len = len.to_le_bytes();
    out.reserve(HEADER + 1 + body.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    Ok(())
}

/// Frames an entry record for `index` with an opaque body.
pub fn entry_record(index: u64, body: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut b = Vec::with_capacity(8 + body.len());
    b.extend_from_slice(&index.to_le_bytes());
    b.extend_from_slice(body);
    frame(KIND_ENTRY, &b, out)
}

/// Frames a truncate record: entries from `from` on are gone.
pub fn truncate_record(from: u64, out: &mut Vec<u8>) -> io::Result<()> {
    frame(KIND_TRUNCATE, &from.to_le_bytes(), out)
}

/// Frames a purge record carrying the purged log id (opaque) and its index.
pub fn purge_record(index: u64, body: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut b = Vec::with_capacity(8 + body.len());
    b.extend_from_slice(&index.to_le_bytes());
    b.extend_from_slice(body);
    frame(KIND_PURGE, &b, out)
}

struct Segment {
    seq: u64,
    path: PathBuf,
    /// Highest entry index written to it.
    max_index: Option<u64>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(seq) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((seq, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens (creating if needed) the log in `dir`, replays it, and starts the writer.
pub fn open(
    dir: &Path,
    policy: FsyncPolicy,
    segment_bytes: u64,
) -> Result<(Wal, Replayed), WalError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let files = list_segments(dir)?;
    let mut replayed = Replayed::default();
    let mut segments = Vec::new();
    let count = files.len();
    let mut tail_format = Format::Checked;
    for (i, (seq, path)) in files.into_iter().enumerate() {
        let last = i + 1 == count;
        let (max_index, format) = replay_segment(&path, last, &mut replayed)?;
        tail_format = format;
        segments.push(Segment {
            seq,
            path,
            max_index,
        });
    }
    let (tail_seq, tail_path) = match segments.last() {
        Some(s) => (s.seq, s.path.clone()),
        None => {
            let p = segment_path(dir, 1);
            File::create(&p).map_err(io_err(&p))?;
            sync_dir(dir).map_err(io_err(dir))?;
            segments.push(Segment {
                seq: 1,
                path: p.clone(),
                max_index: None,
            });
            (1, p)
        }
    };
    let mut file = OpenOptions::new()
        .append(true)
        .open(&tail_path)
        .map_err(io_err(&tail_path))?;
    let mut size = file.metadata().map_err(io_err(&tail_path))?.len();
    if size == 0 {
        file.write_all(&MAGIC).map_err(io_err(&tail_path))?;
        file.sync_data().map_err(io_err(&tail_path))?;
        size = MAGIC.len() as u64;
    }
    #[cfg(feature = "power-cut")]
    crate::power_cut::gate().synced(&tail_path, size);
    let (tx, rx) = mpsc::channel();
    let mut writer = Writer {
        dir: dir.to_path_buf(),
        file,
        size,
        seq: tail_seq,
        segments,
        policy,
        segment_bytes,
        #[cfg(feature = "planted-bugs")]
        ack_before_write: planted::ack_before_write(),
        #[cfg(feature = "planted-bugs")]
        ack_before_fsync: crate::planted::armed(crate::planted::ACK_BEFORE_FSYNC),
        last_sync: Instant::now(),
        dirty: false,
    };
    if tail_format == Format::First && size > 0 {
        // New records never go into a segment of the first format.
        writer.roll().map_err(io_err(dir))?;
    }
    let thread = std::thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(io_err(dir))?;
    Ok((
        Wal {
            tx,
            thread: Some(thread),
        },
        replayed,
    ))
}

/// Replays one segment into `out`; returns its highest entry index and its
/// format (an empty segment counts as the current one).
fn replay_segment(
    path: &Path,
    is_last: bool,
    out: &mut Replayed,
) -> Result<(Option<u64>, Format), WalError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(io_err(path))?;
    let (format, mut off) = if data.starts_with(&MAGIC) {
        (Format::Checked, MAGIC.len())
    } else if data.len() < MAGIC.len() && MAGIC.starts_with(&data) {
        // Empty, or a new segment whose magic was torn: it holds no record.
        (Format::Checked, 0)
    } else {
        (Format::First, 0)
    };
    let pre = format.header();
    let mut max_index = None;
    while off < data.len() {
        let bad = |why: &str| why.to_string();
        let u32_at =
            |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default());
        // A problem and whether it can be a torn tail (a crash mid-append).
        let problem = if data.len() - off < pre + 1 {
            Some((bad("truncated header"), true))
        } else {
            let len = u32_at(off) as usize;
            let crc = u32_at(off + pre - 4);
            let len_intact =
                format == Format::First || crc32fast::hash(&data[off..off + 4]) == u32_at(off + 4);
            if !len_intact || len == 0 {
                // A file extended but never written reads as zeros to its end.
                let zeros = data[off..].iter().all(|&b| b == 0);
                let why = if len_intact {
                    "impossible record length"
                } else {
                    // Not a torn write: its bytes are all there, and they are wrong.
                    "damaged record length"
                };
                Some((bad(why), zeros))
            } else if data.len() - off - pre < len {
                Some((bad("truncated record"), true))
            } else {
                let rec = &data[off + pre..off + pre + len];
                #[cfg(feature = "planted-bugs")]
                let crc = if crate::planted::armed(crate::planted::SKIP_WAL_CHECKSUM) {
                    crc32fast::hash(rec)
                } else {
                    crc
                };
                if crc32fast::hash(rec) != crc {
                    // Torn only if it is the last record: a damaged record with
                    // whole records after it is corruption, and cutting there
                    // would silently drop entries this node acknowledged (found
                    // by the fault harness's bitflip row: openraft then saw the
                    // follower's log go back and the leader panicked).
                    // And even then only if part of it was never written: a
                    // crash leaves unwritten sectors of an appended record as
                    // zeros, while a flipped bit in a record that was whole
                    // on disk (and so acknowledged) leaves every sector
                    // written (the bitflip row again: the last record cut,
                    // the leader saw the log go back). As etcd's WAL decides.
                    let end = off + pre + len;
                    Some((
                        bad("checksum mismatch"),
                        end == data.len() && has_unwritten_sector(&data, off, end),
                    ))
                } else {
                    apply_record(rec, out, &mut max_index);
                    off += pre + len;
                    None
                }
            }
        };
        if let Some((why, torn)) = problem {
            if !is_last || !torn {
                return Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset: off as u64,
                    why,
                });
            }
            // A crash mid-append leaves a partial record at the very end: cut it.
            let torn = (data.len() - off) as u64;
            tracing::warn!(path = %path.display(), offset = off, bytes = torn, why, "cutting torn tail of the write-ahead log");
            file.set_len(off as u64).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))?;
            out.torn_bytes += torn;
            break;
        }
    }
    Ok((max_index, format))
}

/// Disk sector size assumed when telling a torn write from corruption:
/// a sector is written whole or not at all.
const SECTOR: usize = 512;

/// Whether `data[start..end]`, split at sector boundaries of the file,
/// has a piece that is all zeros (a sector the crash left unwritten).
fn has_unwritten_sector(data: &[u8], start: usize, end: usize) -> bool {
    let mut at = start;
    while at < end {
        let next = ((at / SECTOR + 1) * SECTOR).min(end);
        if data[at..next].iter().all(|&b| b == 0) {
            return true;
        }
        at = next;
    }
    false
}

fn apply_record(rec: &[u8], out: &mut Replayed, max_index: &mut Option<u64>) {
    let (kind, body) = (rec[0], &rec[1..]);
    let index = body
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    match (kind, index) {
        (KIND_ENTRY, Some(i)) => {
            out.entries.insert(i, body[8..].to_vec());
            *max_index = (*max_index).max(Some(i));
        }
        (KIND_TRUNCATE, Some(from)) => {
            out.entries.split_off(&from);
        }
        (KIND_PURGE, Some(upto)) => {
            // A purge up to the last possible index leaves nothing (found by fuzzing).
            out.entries = match upto.checked_add(1) {
                Some(first_kept) => out.entries.split_off(&first_kept),
                None => BTreeMap::new(),
            };
            out.purged = Some(body[8..].to_vec());
        }
        _ => {}
    }
}

/// Test-only planted bugs (cargo feature `planted-bugs`, never in a release
/// build; see `crate::planted`): they let CI prove the tests can fail.
#[cfg(feature = "planted-bugs")]
pub mod planted {
    use super::Done;

    /// Set to `1` to make the log writer acknowledge each write before
    /// writing it: the crash test's control must then find lost writes.
    pub const UNSAFE_ACK_ENV: &str = crate::planted::ACK_BEFORE_LOG;

    /// Whether the bug is armed.
    pub(super) fn ack_before_write() -> bool {
        crate::planted::armed(UNSAFE_ACK_ENV)
    }

    /// With the bug armed, runs `done` now (before the write) and holds the
    /// write back 50 ms, long enough for the client to get its reply even on
    /// a loaded machine, so a short kill -9 run reliably lands in the window;
    /// otherwise hands `done` back to run after the sync.
    pub(super) fn ack_early(armed: bool, done: Option<Done>) -> Option<Done> {
        if !armed {
            return done;
        }
        if let Some(done) = done {
            done(Ok(()));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        None
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    size: u64,
    seq: u64,
    segments: Vec<Segment>,
    policy: FsyncPolicy,
    segment_bytes: u64,
    /// The planted bug is armed (feature `planted-bugs` only).
    #[cfg(feature = "planted-bugs")]
    ack_before_write: bool,
    /// Planted: acknowledge after write(2), before fdatasync.
    #[cfg(feature = "planted-bugs")]
    ack_before_fsync: bool,
    last_sync: Instant,
    dirty: bool,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        loop {
            let first = match self.policy {
                FsyncPolicy::Always => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
                FsyncPolicy::EverySec => match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.sync_if_due();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
            };
            // Group commit: everything already queued joins this batch.
            let mut jobs = vec![first];
            while let Ok(job) = rx.try_recv() {
                jobs.push(job);
            }
            let records = jobs
                .iter()
                .filter(|j| matches!(j, Job::Write { .. }))
                .count();
            if records > 0 {
                crate::metrics::STORAGE.wal_batch.observe(records as u64);
            }
            let mut done = Vec::new();
            let mut result = Ok(());
            let mut close = None;
            for job in jobs {
                match job {
                    Job::Write {
                        bytes,
                        last_index,
                        done: cb,
                    } => {
                        #[cfg(feature = "planted-bugs")]
                        let cb = planted::ack_early(self.ack_before_write, cb);
                        if let Some(cb) = cb {
                            done.push(cb);
                        }
                        if result.is_ok() {
                            result = self.write(&bytes, last_index);
                        }
                    }
                    Job::DropSegments { upto } => {
                        // The purge record must be durable before the files it replaces go.
                        if result.is_ok() {
                            result = self.sync();
                        }
                        if result.is_ok() {
                            self.drop_segments(upto);
                        }
                    }
                    Job::Close { done } => close = Some(done),
                }
            }
            #[cfg(feature = "planted-bugs")]
            if self.ack_before_fsync && result.is_ok() {
                for cb in done.drain(..) {
                    cb(Ok(()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if result.is_ok() {
                result = match self.policy {
                    FsyncPolicy::Always => self.sync(),
                    FsyncPolicy::EverySec => {
                        self.sync_if_due();
                        Ok(())
                    }
                };
            }
            for cb in done {
                cb(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
            if let Err(e) = &result {
                tracing::error!(error = %e, "write-ahead log write failed");
            }
            if let Some(close) = close {
                let _ = self.sync();
                let _ = close.send(());
                return;
            }
        }
    }

    fn write(&mut self, bytes: &[u8], last_index: Option<u64>) -> io::Result<()> {
        if self.size >= self.segment_bytes && last_index.is_some() {
            self.roll()?;
        }
        #[cfg(feature = "power-cut")]
        let _gate = crate::power_cut::gate();
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        self.dirty = true;
        if let (Some(i), Some(seg)) = (last_index, self.segments.last_mut()) {
            seg.max_index = seg.max_index.max(Some(i));
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            #[cfg(feature = "power-cut")]
            let mut gate = crate::power_cut::gate();
            let started = Instant::now();
            self.file.sync_data()?;
            let disk = &crate::metrics::STORAGE;
            disk.wal_fsync.observe(started.elapsed().as_micros() as u64);
            self.dirty = false;
            #[cfg(feature = "power-cut")]
            if let Some(seg) = self.segments.last() {
                gate.synced(&seg.path, self.size);
            }
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn sync_if_due(&mut self) {
        if self.dirty && self.last_sync.elapsed() >= Duration::from_secs(1) {
            if let Err(e) = self.sync() {
                tracing::error!(error = %e, "write-ahead log fdatasync failed");
            }
        }
    }

    /// Seals the current segment and starts the next one.
    fn roll(&mut self) -> io::Result<()> {
        #[cfg(feature = "power-cut")]
        let mut gate = crate::power_cut::gate();
        self.file.sync_data()?;
        self.seq += 1;
        let path = segment_path(&self.dir, self.seq);
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.file.write_all(&MAGIC)?;
        self.file.sync_data()?;
        sync_dir(&self.dir)?;
        self.size = MAGIC.len() as u64;
        #[cfg(feature = "power-cut")]
        gate.synced(&path, self.size);
        self.segments.push(Segment {
            seq: self.seq,
            path,
            max_index: None,
        });
        Ok(())
    }

    /// Deletes sealed segments whose entries are all at or below `upto`.
    /// The newest segment is never deleted: it holds the purge record.
    fn drop_segments(&mut self, upto: u64) {
        let sealed = self.segments.len().saturating_sub(1);
        let mut removed = 0;
        for seg in &self.segments[..sealed] {
            if seg.max_index.is_none_or(|m| m <= upto) {
                if let Err(e) = std::fs::remove_file(&seg.path) {
                    tracing::warn!(path = %seg.path.display(), error = %e, "cannot remove purged segment");
                    break;
                }
                removed += 1;
            } else {
                break;
            }
        }
        self.segments.drain(..removed);
        if removed > 0 {
            let _ = sync_dir(&self.dir);
        }
    }
}

impl Wal {
    /// Queues framed records; `done` runs once they are durable (per the policy).
    pub fn write(
        &self,
        bytes: Vec<u8>,
        last_index: Option<u64>,
        done: Option<Done>,
    ) -> io::Result<()> {
        self.tx
            .send(Job::Write {
                bytes,
                last_index,
                done,
            })
            .map_err(|_| io::Error::other("write-ahead log writer stopped"))
    }

    /// Writes records and waits until they are durable.
    pub fn write_sync(&self, bytes: Vec<u8>, last_index: Option<u64>) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        self.write(
            bytes,
            last_index,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        )?;
        rx.recv()
            .map_err(|_| io::Error::other("write-ahead log writer stopped"))?
    }

    /// Deletes sealed segments fully covered by a purge at `upto`.
    pub fn drop_segments(&self, upto: u64) {
        let _ = self.tx.send(Job::DropSegments { upto });
    }

    /// Syncs and stops the writer.
    pub fn close(&mut self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Job::Close { done: tx }).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads a small file written by [`write_atomically`].
pub fn read_small(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `data` durably: write a temp file, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Length of the file at `path` (0 if absent), for tests and metrics.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Total bytes of the log's segments.
pub fn disk_bytes(dir: &Path) -> u64 {
    list_segments(dir)
        .map(|v| v.iter().map(|(_, p)| file_len(p)).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flagstaff-wal-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Opening `d` is refused as corrupt for `why` and leaves the segment
    /// `seg` as `data` (nothing cut); returns the offset it names.
    fn assert_refused(d: &Path, seg: &Path, data: &[u8], why_expected: &str) -> u64 {
        let offset = match open(d, FsyncPolicy::Always, 1 << 20) {
            Err(WalError::Corrupt { why, offset, .. }) => {
                assert_eq!(why, why_expected);
                offset
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok((_, r)) => panic!("opened with entries {:?}", r.entries.keys()),
        };
        assert_eq!(std::fs::read(seg).unwrap(), data, "nothing was cut");
        offset
    }

    fn append(wal: &Wal, index: u64, body: &str) {
        let mut b = Vec::new();
        entry_record(index, body.as_bytes(), &mut b).unwrap();
        wal.write_sync(b, Some(index)).unwrap();
    }

    #[test]
    fn entries_survive_reopen_with_truncate_and_purge_applied() {
        let d = dir("reopen");
        {
            let (wal, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            assert!(r.entries.is_empty());
            for i in 1..=5 {
                append(&wal, i, &format!("e{i}"));
            }
            let mut b = Vec::new();
            truncate_record(4, &mut b).unwrap();
            wal.write_sync(b, None).unwrap();
            append(&wal, 4, "e4'");
            let mut b = Vec::new();
            purge_record(2, b"purged-2", &mut b).unwrap();
            wal.write_sync(b, None).unwrap();
        }
        let (_wal, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
        let got: Vec<(u64, String)> = r
            .entries
            .iter()
            .map(|(i, b)| (*i, String::from_utf8(b.clone()).unwrap()))
            .collect();
        assert_eq!(got, vec![(3, "e3".into()), (4, "e4'".into())]);
        assert_eq!(r.purged.as_deref(), Some(&b"purged-2"[..]));
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_records_kept() {
        let d = dir("torn");
        {
            let (wal, _) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            append(&wal, 1, "one");
            append(&wal, 2, "two");
        }
        let seg = segment_path(&d, 1);
        let full = std::fs::read(&seg).unwrap();
        // Simulate a crash half-way through the second record.
        std::fs::write(&seg, &full[..full.len() - 3]).unwrap();
        let (wal, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(r.torn_bytes > 0);
        append(&wal, 2, "two again");
        drop(wal);
        let (_w, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.entries[&2], b"two again");
    }

    /// A flipped bit in the last record, whole on disk (so acknowledged), is
    /// corruption, not a torn tail: cutting it made the node's log go back
    /// and its leader panic (the bitflip row, seed 1005).
    #[test]
    fn a_flipped_bit_in_a_whole_last_record_is_corruption() {
        let d = dir("flip");
        {
            let (wal, _) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            append(&wal, 1, "one");
            append(&wal, 2, "two");
        }
        let seg = segment_path(&d, 1);
        let mut data = std::fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 1] ^= 0x40;
        std::fs::write(&seg, &data).unwrap();
        assert_refused(&d, &seg, &data, "checksum mismatch");
    }

    /// A last record with a sector the crash never wrote (zeros) is torn.
    #[test]
    fn a_last_record_with_an_unwritten_sector_is_a_torn_tail() {
        let d = dir("unwritten");
        let long = "x".repeat(3 * SECTOR);
        {
            let (wal, _) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            append(&wal, 1, "one");
            append(&wal, 2, &long);
        }
        let seg = segment_path(&d, 1);
        let mut data = std::fs::read(&seg).unwrap();
        // Zero the last whole sector inside the second record.
        let n = data.len();
        let sector_end = n / SECTOR * SECTOR;
        data[sector_end - SECTOR..sector_end].fill(0);
        std::fs::write(&seg, &data).unwrap();
        let (_w, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(r.torn_bytes > 0);
    }

    #[test]
    fn a_damaged_record_before_whole_ones_is_corruption_not_a_torn_tail() {
        let d = dir("flip-mid");
        {
            let (wal, _) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            append(&wal, 1, "one");
            append(&wal, 2, "two");
            append(&wal, 3, "three");
        }
        let seg = segment_path(&d, 1);
        let mut data = std::fs::read(&seg).unwrap();
        let at = data.windows(3).position(|w| w == b"two").unwrap();
        data[at] ^= 0x01;
        std::fs::write(&seg, &data).unwrap();
        // Entries 2 and 3 were acknowledged: never silently cut them.
        assert_refused(&d, &seg, &data, "checksum mismatch");
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let d = dir("zeros");
        {
            let (wal, _) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            append(&wal, 1, "one");
        }
        let seg = segment_path(&d, 1);
        let mut data = std::fs::read(&seg).unwrap();
        data.extend_from_slice(&[0; 40]);
        std::fs::write(&seg, &data).unwrap();
        let (_w, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(r.torn_bytes, 40);
    }

    /// A bit flipped in the length of the last record, so that it reaches past
    /// the end of the file, read as a torn tail: the entry (acknowledged) was
    /// cut silently. The length's own checksum tells the two apart.
    #[test]
    fn a_damaged_length_at_the_end_is_corruption_not_a_torn_tail() {
        let d = dir("flip-len");
        {
            let (wal, _) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            append(&wal, 1, "one");
            append(&wal, 2, "two");
        }
        let seg = segment_path(&d, 1);
        let mut data = std::fs::read(&seg).unwrap();
        let mut last = Vec::new();
        entry_record(2, b"two", &mut last).unwrap();
        let at = data.len() - last.len();
        data[at + 3] ^= 0x10;
        std::fs::write(&seg, &data).unwrap();
        assert_eq!(
            assert_refused(&d, &seg, &data, "damaged record length"),
            at as u64
        );
        // A record torn inside its header (length incomplete) is still a torn tail.
        std::fs::write(&seg, &data[..at + 6]).unwrap();
        let (_w, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(r.torn_bytes, 6);
    }

    /// Frames a record as the first format did (no length checksum).
    fn first_format(index: u64, body: &str, out: &mut Vec<u8>) {
        let mut rec = vec![KIND_ENTRY];
        rec.extend_from_slice(&index.to_le_bytes());
        rec.extend_from_slice(body.as_bytes());
        out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&rec).to_le_bytes());
        out.extend_from_slice(&rec);
    }

    #[test]
    fn a_log_of_the_first_format_is_replayed_and_continued_in_a_new_segment() {
        let d = dir("upgrade");
        std::fs::create_dir_all(&d).unwrap();
        let mut old = Vec::new();
        first_format(1, "one", &mut old);
        first_format(2, "two", &mut old);
        let torn = 5;
        first_format(3, "three (torn)", &mut old);
        old.truncate(old.len() - torn);
        std::fs::write(segment_path(&d, 1), &old).unwrap();
        {
            let (wal, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
            assert_eq!(r.entries[&2], b"two");
            assert!(r.torn_bytes > 0);
            append(&wal, 3, "three");
        }
        let new = std::fs::read(segment_path(&d, 2)).unwrap();
        assert!(
            new.starts_with(&MAGIC),
            "new records go to a segment of the new format"
        );
        let (_w, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.torn_bytes, 0);
        assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(r.entries[&3], b"three");
    }

    #[test]
    fn a_segment_whose_magic_was_torn_is_empty() {
        let d = dir("torn-magic");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(segment_path(&d, 1), &MAGIC[..3]).unwrap();
        {
            let (wal, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            assert!(r.entries.is_empty());
            assert_eq!(r.torn_bytes, 3);
            append(&wal, 1, "one");
        }
        let (_w, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn segments_roll_over_and_purged_ones_are_deleted() {
        let d = dir("roll");
        let (wal, _) = open(&d, FsyncPolicy::Always, 64).unwrap();
        for i in 1..=10 {
            append(&wal, i, "0123456789012345678901234567890123456789");
        }
        assert!(list_segments(&d).unwrap().len() >= 5);
        let mut b = Vec::new();
        purge_record(8, b"p", &mut b).unwrap();
        wal.write_sync(b, None).unwrap();
        wal.drop_segments(8);
        drop(wal);
        let (_w, r) = open(&d, FsyncPolicy::Always, 64).unwrap();
        assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), vec![9, 10]);
        assert!(list_segments(&d).unwrap().len() <= 3);
    }

    #[test]
    fn concurrent_writers_share_syncs() {
        let d = dir("group");
        let (wal, _) = open(&d, FsyncPolicy::Always, 1 << 30).unwrap();
        let wal = std::sync::Arc::new(wal);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let idx = t * 1000 + i + 1;
                        let mut b = Vec::new();
                        entry_record(idx, b"x", &mut b).unwrap();
                        wal.write_sync(b, Some(idx)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(wal);
        let (_w, r) = open(&d, FsyncPolicy::Always, 1 << 30).unwrap();
        assert_eq!(r.entries.len(), 400);
    }

    /// A record larger than the old 256 MiB replay cap (which cut it as a
    /// torn tail, losing an acknowledged write) is written and replayed.
    #[test]
    fn a_record_over_256_mib_survives_reopen() {
        let d = dir("big");
        let big = vec![b'x'; 300 * 1024 * 1024];
        {
            let (wal, _) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
            append(&wal, 1, "small");
            let mut b = Vec::new();
            entry_record(2, &big, &mut b).unwrap();
            wal.write_sync(b, Some(2)).unwrap();
            append(&wal, 3, "after");
        }
        let (_w, r) = open(&d, FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.torn_bytes, 0);
        assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(r.entries[&2] == big);
        drop(_w);
        let _ = std::fs::remove_dir_all(&d);
    }
}
