//! The archive before purge, and the file format `hookwarden export` and `import` share:
//! gzip-compressed JSON Lines, one [`ArchivedEvent`] per line (the event's row, headers, body
//! base64, attempts, receipts).
//!
//! A source with `archive_dir` has its events written out before retention purges anything
//! of them, one file per source, day (UTC, of when they were received) and batch:
//! `<archive_dir>/<source>/<YYYY-MM-DD>/<first event id>.jsonl.gz`. Each file is written
//! once, atomically: to `….tmp`, fsynced, renamed into place, its directory fsynced.
//!
//! Nothing lost, nothing twice, whenever the process dies: the events of a batch are first
//! claimed for their file in one transaction (`archive_file`), the file is written from the
//! claimed rows, then the rows are marked written (`archived_at`). A purge takes an archiving
//! source's events only once marked. A run finds the files claimed and not marked (a run
//! that died) before it claims anything new: a file in place was renamed after its fsync, so
//! it is whole and only the mark is missing; a file not in place is written again from its
//! rows, which no purge could take. A claimed event is never claimed for another file, so
//! no line is ever in two files.
//!
//! Architecture invariant: this module knows files and the format; which events are due and
//! how they are marked is the store's.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::domain::{DeliveryState, Outcome, ReceivedHeaders};
pub use crate::store::ArchivedEvent;
use crate::store::{Cursor, PurgePlan, Store, StoreError};

/// Why archiving stopped; the purge of that run does not go on (and could not take what was
/// not written anyway).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the archive file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What one archive pass wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Archived {
    pub events: u64,
    pub files: u64,
}

/// Events per file at most: a batch claimed, read and written at once.
pub const BATCH: usize = 500;

/// What one archive batch did, and how long it held the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchivedBatch {
    /// Events the batch found due; fewer than asked: the pass is done.
    pub picked: usize,
    /// Of those, the events it wrote and marked, and into how many files.
    pub archived: Archived,
    /// How long its claims and marks took, waiting for the writer included: the file
    /// writing in between holds nothing.
    pub held: Duration,
}

/// Finishes the files a run that died left claimed (before anything new is claimed): a file
/// in place is whole and only its mark is missing; one not in place is written again from
/// its rows. `now` (unix ms) is the events' `archived_at`.
pub async fn finish_unfinished(store: &Store, now: i64) -> Result<Archived, ArchiveError> {
    let mut done = Archived::default();
    for file in store.unfinished_archive_files().await? {
        let path = PathBuf::from(&file);
        if !path.exists() {
            write_file(store, &file, now).await?;
        }
        done.events += store.mark_archived(&file, now).await?;
        done.files += 1;
    }
    Ok(done)
}

/// Writes up to `limit` events after `cursor`, of the plan's archiving sources, that a purge
/// of `plan` could take: claimed, written and marked, a file per source and day. `dirs` maps
/// a source to its `archive_dir`. The caller goes on from the cursor answered, pacing the
/// batches (see `crate::retention`).
pub async fn archive_batch(
    store: &Store,
    plan: &PurgePlan,
    dirs: &BTreeMap<String, PathBuf>,
    now: i64,
    cursor: &Cursor,
    limit: usize,
) -> Result<(ArchivedBatch, Cursor), ArchiveError> {
    let due = store.due_for_archive(plan, cursor, limit).await?;
    let mut batch = ArchivedBatch { picked: due.len(), ..Default::default() };
    let next = due.last().map(|last| last.id.clone()).or_else(|| cursor.clone());
    let mut files: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for event in &due {
        let Some(dir) = dirs.get(&event.source) else { continue };
        let day = &crate::timestamp::format_ms(event.received_at)[..10];
        let ids = files.entry(dir.join(&event.source).join(day)).or_default();
        ids.push(event.id.clone());
    }
    for (day_dir, ids) in files {
        let file = day_dir.join(format!("{}.jsonl.gz", ids[0])).to_string_lossy().into_owned();
        let began = Instant::now();
        let claimed = store.claim_for_archive(&file, &ids).await?;
        batch.held += began.elapsed();
        if claimed == 0 {
            continue;
        }
        write_file(store, &file, now).await?;
        let began = Instant::now();
        batch.archived.events += store.mark_archived(&file, now).await?;
        batch.held += began.elapsed();
        batch.archived.files += 1;
    }
    Ok((batch, next))
}

/// Writes the events claimed for `file` to it, atomically (off the async threads).
async fn write_file(store: &Store, file: &str, now: i64) -> Result<(), ArchiveError> {
    let events = store.archived_events_of(file, now).await?;
    let path = PathBuf::from(file);
    let target = path.clone();
    tokio::task::spawn_blocking(move || write_atomically(&target, &events))
        .await
        .map_err(|e| ArchiveError::Io { path: path.clone(), source: io::Error::other(e) })?
        .map_err(|source| ArchiveError::Io { path, source })
}

/// Writes `events` as gzip JSON Lines to `path`: to `<path>.tmp`, fsynced, renamed, and the
/// directories fsynced (the new name, and any directory made for it, survive a power cut).
pub fn write_atomically(path: &Path, events: &[ArchivedEvent]) -> io::Result<()> {
    let mut out = AtomicFile::create(path)?;
    for event in events {
        out.write_line(event)?;
    }
    out.commit()
}

/// A gzip JSON Lines file being written: in place only once [`AtomicFile::commit`]ted.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    gz: GzEncoder<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> io::Result<Self> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        create_dir_synced(dir)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp)?;
        Ok(Self { path: path.to_path_buf(), tmp, gz: GzEncoder::new(BufWriter::new(file), Compression::default()) })
    }

    pub fn write_line(&mut self, event: &ArchivedEvent) -> io::Result<()> {
        serde_json::to_writer(&mut self.gz, event)?;
        self.gz.write_all(b"\n")
    }

    pub fn commit(self) -> io::Result<()> {
        let file = self.gz.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.path)?;
        sync_dir(self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))
    }
}

/// Makes `dir` and its missing parents, fsyncing each parent a directory was made in.
fn create_dir_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_synced(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Why a file could not be read back; names the file and line (from 1).
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ReadError {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// The events of an archive or export file, in order, each checked (see [`check`]). Takes
/// gzip (also several members one after another, as `cat` makes) or plain JSON Lines.
pub fn read_file(path: &Path) -> Result<impl Iterator<Item = Result<ArchivedEvent, ReadError>>, ReadError> {
    let name = path.display().to_string();
    let fail = |line: u64, reason: String| ReadError { file: name.clone(), line, reason };
    let mut file = BufReader::new(File::open(path).map_err(|e| fail(0, format!("cannot open: {e}")))?);
    let gzip = file.fill_buf().map_err(|e| fail(0, format!("cannot read: {e}")))?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip { Box::new(MultiGzDecoder::new(file)) } else { Box::new(file) };
    Ok(Lines { reader: BufReader::new(reader), file: name, line: 0, done: false })
}

struct Lines {
    reader: BufReader<Box<dyn Read>>,
    file: String,
    line: u64,
    done: bool,
}

impl Iterator for Lines {
    type Item = Result<ArchivedEvent, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            self.line += 1;
            let mut buf = Vec::new();
            let fail = |line, reason| Some(Err(ReadError { file: self.file.clone(), line, reason }));
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return fail(self.line, format!("the file is damaged here ({e})"));
                }
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return match serde_json::from_slice::<ArchivedEvent>(&buf).map_err(|e| e.to_string()).and_then(|event| {
                check(&event)?;
                Ok(event)
            }) {
                Ok(event) => Some(Ok(event)),
                Err(reason) => fail(self.line, reason),
            };
        }
    }
}

/// What an archived event must be to be imported: known outcome and delivery state, an
/// event id, headers and body both there (and decodable) or both gone with
/// `payload_purged_at` set.
pub fn check(event: &ArchivedEvent) -> Result<(), String> {
    let e = &event.event;
    if !e.id.starts_with("evt_") || e.id.len() < 5 {
        return Err(format!("`{}` is not an event id", e.id));
    }
    if e.source.is_empty() {
        return Err(format!("{}: no source", e.id));
    }
    if Outcome::parse(&e.outcome).is_none() {
        return Err(format!("{}: unknown outcome `{}`", e.id, e.outcome));
    }
    if DeliveryState::parse(&e.delivery_state).is_none() {
        return Err(format!("{}: unknown delivery state `{}`", e.id, e.delivery_state));
    }
    match (&event.headers, &event.body_base64) {
        (Some(headers), Some(body)) => {
            serde_json::from_str::<ReceivedHeaders>(headers.get())
                .map_err(|err| format!("{}: headers are not [name, value] pairs: {err}", e.id))?;
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body)
                .map_err(|err| format!("{}: body_base64 is not base64: {err}", e.id))?;
        }
        (None, None) if e.payload_purged_at.is_some() => {}
        (None, None) => return Err(format!("{}: no headers and body, and no payload_purged_at", e.id)),
        _ => return Err(format!("{}: headers and body_base64 go together", e.id)),
    }
    for a in &event.attempts {
        if !matches!(a.kind.as_str(), "scheduled" | "replay") {
            return Err(format!("{}: unknown attempt kind `{}`", e.id, a.kind));
        }
    }
    for r in &event.receipts {
        if !matches!(r.status.as_str(), "applied" | "failed") {
            return Err(format!("{}: unknown receipt status `{}`", e.id, r.status));
        }
    }
    Ok(())
}
