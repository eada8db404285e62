//! `hookwarden export` and `hookwarden import`: the archive's format (gzip JSON Lines, see
//! `crate::archive`) out of a store and back into one, for backups, audits, restore drills
//! and moving from SQLite to PostgreSQL. Both open the database of a config directly (like
//! `storage compact`): an export only reads; an import into SQLite needs the gateway stopped
//! (it numbers events in memory), into PostgreSQL it may run.

use std::io::Write;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::{CliError, time_arg};
use crate::archive::{self, AtomicFile};
use crate::config::Config;
use crate::store::{Imported, Store};

/// Events read, written or imported at a time.
const PAGE: usize = 500;

/// What to export.
pub struct ExportArgs {
    pub config: PathBuf,
    pub source: String,
    pub since: String,
    pub until: Option<String>,
    /// A file (written atomically); `None`: stdout.
    pub output: Option<PathBuf>,
}

fn failed(err: impl std::fmt::Display) -> CliError {
    CliError::Failed(err.to_string())
}

async fn open(config: &Path) -> Result<Store, CliError> {
    let config = Config::load(config).map_err(|e| CliError::Usage(format!("{}: {e}", config.display())))?;
    Store::connect(&config.database_url).await.map_err(failed)
}

fn ms(field: &str, text: &str) -> Result<i64, CliError> {
    let at = time_arg(text, OffsetDateTime::now_utc())?;
    crate::timestamp::parse_rfc3339(field, &at).map_err(|e| CliError::Usage(e.to_string()))
}

/// Writes the source's events received in `[since, until)` (default until now), whole, in id
/// order; says on stderr how many.
pub async fn export(args: ExportArgs) -> Result<(), CliError> {
    let since = ms("--since", &args.since)?;
    let until = ms("--until", args.until.as_deref().unwrap_or("now"))?;
    if until <= since {
        return Err(CliError::Usage("--until must be after --since".into()));
    }
    let store = open(&args.config).await?;
    let mut out: Box<dyn LineSink> = match &args.output {
        Some(path) => Box::new(AtomicFile::create(path).map_err(|e| failed(format!("{}: {e}", path.display())))?),
        None => Box::new(flate2::write::GzEncoder::new(std::io::stdout().lock(), flate2::Compression::default())),
    };
    let mut cursor = None;
    let mut count = 0u64;
    loop {
        let page = store.export_page(&args.source, since, until, &cursor, PAGE).await.map_err(failed)?;
        for event in &page {
            out.line(event).map_err(failed)?;
        }
        count += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == PAGE => cursor = Some(last.event.id.clone()),
            _ => break,
        }
    }
    out.finish().map_err(failed)?;
    store.close().await;
    let to = args.output.map_or("stdout".to_string(), |p| p.display().to_string());
    eprintln!(
        "exported {count} events of {} received from {} until {} to {to}",
        args.source,
        crate::timestamp::format_ms(since),
        crate::timestamp::format_ms(until)
    );
    Ok(())
}

/// Where export lines go: a file put in place at the end, or stdout.
trait LineSink {
    fn line(&mut self, event: &archive::ArchivedEvent) -> std::io::Result<()>;
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

impl LineSink for AtomicFile {
    fn line(&mut self, event: &archive::ArchivedEvent) -> std::io::Result<()> {
        self.write_line(event)
    }
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        self.commit()
    }
}

impl<W: Write> LineSink for flate2::write::GzEncoder<W> {
    fn line(&mut self, event: &archive::ArchivedEvent) -> std::io::Result<()> {
        serde_json::to_writer(&mut *self, event)?;
        self.write_all(b"\n")
    }
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.flush()
    }
}

/// Reads every file through once (each line checked: a bad one stops it all, naming file
/// and line, before anything is written), then imports them in transactions of `PAGE`
/// events; events the store has already are left as they are.
pub async fn import(config: &Path, files: &[PathBuf]) -> Result<(), CliError> {
    if files.is_empty() {
        return Err(CliError::Usage("name the files to import".into()));
    }
    let mut lines = 0u64;
    for file in files {
        for event in archive::read_file(file).map_err(failed)? {
            event.map_err(|e| failed(format!("{e}; nothing was imported")))?;
            lines += 1;
        }
    }
    let store = open(config).await?;
    let _sole = store.lock_sole_gateway().map_err(|e| failed(format!("{e}; stop it to import into SQLite")))?;
    let mut total = Imported::default();
    for file in files {
        let mut events = archive::read_file(file).map_err(failed)?;
        loop {
            let batch = events.by_ref().take(PAGE).collect::<Result<Vec<_>, _>>().map_err(|e| {
                failed(format!("{e} (the file changed while importing; what came before it is imported: run it again)"))
            })?;
            if batch.is_empty() {
                break;
            }
            let done = store.import_events(&batch).await.map_err(failed)?;
            total.events += done.events;
            total.attempts += done.attempts;
            total.receipts += done.receipts;
            total.present += done.present;
            if batch.len() < PAGE {
                break;
            }
        }
    }
    store.close().await;
    println!(
        "imported {} events ({} attempts, {} receipts) from {lines} lines in {} files; {} were in the store already and left as they were",
        total.events,
        total.attempts,
        total.receipts,
        files.len(),
        total.present
    );
    Ok(())
}
