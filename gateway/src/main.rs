//! The `hookwarden` binary: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand};
use hookwarden::cli::{self, Api, CliError, ReconcileArgs, ReplayArgs};
use hookwarden::clock::SystemClock;
use hookwarden::config::Config;
use hookwarden::telemetry::{self, LogFormat};

/// The request path allocates and frees many small buffers on every worker thread; mimalloc's
/// per-thread free lists measured far cheaper there than glibc's malloc (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookwarden",
    version,
    about = "A receipt-aware webhook gateway with guardrailed replay",
    after_help = "Examples:
  hookwarden config check hookwarden.toml        what a config resolves to, secrets redacted
  hookwarden serve --config hookwarden.toml      run the gateway
  export HOOKWARDEN_URL=http://127.0.0.1:8080 HOOKWARDEN_TOKEN=hwt_…
  hookwarden summary --source stripe --since 6h  where the gaps are
  hookwarden replay stripe --since 6h            a dry run: what would be sent, and why
  hookwarden completions bash > /etc/bash_completion.d/hookwarden"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: text, or json (an object per line, with the span's event id).
    #[arg(
        long,
        env = "HOOKWARDEN_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true,
        hide_env_values = true
    )]
    log_format: LogFormat,
}

/// Where the admin API is, and who is asking.
#[derive(Args, Clone)]
struct Remote {
    /// The gateway's admin address (`localhost:8080` is taken as http://localhost:8080).
    #[arg(
        long,
        env = "HOOKWARDEN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    server: String,
    /// An API token; optional here when HOOKWARDEN_TOKEN is set, the usual way
    /// (`hookwarden tokens create` makes one).
    #[arg(long, env = "HOOKWARDEN_TOKEN", global = true, hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Print only the API's JSON (nothing else on stdout), instead of a report.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The config file.
        #[arg(long, env = "HOOKWARDEN_CONFIG", default_value = "hookwarden.toml")]
        config: PathBuf,
    },
    /// Replay a source's events: a dry run unless --no-dry-run.
    Replay {
        #[command(flatten)]
        args: ReplayArgs,
        #[command(flatten)]
        remote: Remote,
    },
    /// Ask a source's handler which unknown events it applied (status probe); no replay.
    Reconcile {
        #[command(flatten)]
        args: ReconcileArgs,
        #[command(flatten)]
        remote: Remote,
    },
    /// Look at events, and resolve them by hand.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Replay jobs: list them, show one, follow one to its end (after the terminal died),
    /// cancel, pause or resume one.
    #[command(subcommand)]
    Replays(ReplaysCommand),
    /// Outcome counts per time bucket: where the gaps are.
    Summary {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Bucket size, e.g. 5m or 1h.
        #[arg(long)]
        bucket: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// The audit log; `audit verify` checks its hash chain.
    Audit {
        #[command(subcommand)]
        action: Option<AuditCommand>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// What the store keeps per source (events, payloads, bytes, the oldest gap) and the last
    /// retention purge; `storage compact` converts an old SQLite file (offline).
    Storage {
        #[command(subcommand)]
        action: Option<StorageCommand>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Write a source's events (row, headers, body, attempts, receipts) as gzip JSON Lines,
    /// the archive's format, straight from the config's database: a backup, an audit, or the
    /// first half of moving to another database.
    Export {
        /// The gateway's config file (its database is read; the gateway may run).
        #[arg(long, env = "HOOKWARDEN_CONFIG", default_value = "hookwarden.toml")]
        config: PathBuf,
        #[arg(long)]
        source: String,
        /// From this time (inclusive): RFC 3339, a duration ago (`7d`), a date, …
        #[arg(long)]
        since: String,
        /// Until this time (exclusive); default now.
        #[arg(long)]
        until: Option<String>,
        /// Write to this file (in place only once complete); default stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read archive or export files back into the config's database. Every line is checked
    /// first (a bad one stops it before anything is written); events already there are left
    /// as they are, so importing twice adds nothing. Imported events are not delivered.
    Import {
        /// Archive or export files (gzip or plain JSON Lines).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The config file of the database to import into (a SQLite gateway must be stopped).
        #[arg(long, env = "HOOKWARDEN_CONFIG", default_value = "hookwarden.toml")]
        config: PathBuf,
    },
    /// Operator tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Receipt keys for handlers.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check a config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script, e.g. `hookwarden completions bash > /etc/bash_completion.d/hookwarden`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `hookwarden man > hookwarden.1 && man ./hookwarden.1`.
    Man,
    /// A gateway, the example orders handler and a simulated provider going through a handler
    /// outage, on temporary files: see a gap in the console and close it (needs `cargo build
    /// -p hookwarden-examples`).
    Demo {
        /// Where the gateway (and its console) listens, on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Play the provider's traffic this many times faster (tests).
        #[arg(long, default_value_t = 1.0, hide = true)]
        speed: f64,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load FILE as `serve` would (same checks, same environment) and print what it resolves
    /// to, secrets redacted; exits 2 with the reason when `serve` would refuse it.
    Check {
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Newest first.
    List {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// confirmed, unknown or failed.
        #[arg(long)]
        outcome: Option<String>,
        /// The replay filter language, e.g. "error_code = E_DB AND attempts >= 3".
        #[arg(long)]
        filter: Option<String>,
        /// The provider's own event id (Stripe's evt_…, X-GitHub-Delivery, webhook-id).
        #[arg(long)]
        provider_id: Option<String>,
        /// Events per page (default 50).
        #[arg(long)]
        limit: Option<i64>,
        /// Start at this page (the `--cursor` a previous page printed).
        #[arg(long)]
        cursor: Option<String>,
        /// Every page, not only the first.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One event: why it stands where it stands, its attempts, receipts and payload.
    Show {
        /// The gateway's id (evt_…) or the provider's own id.
        id: String,
        /// The source, when two sources have an event with that provider id.
        #[arg(long)]
        source: Option<String>,
        /// The whole payload (it is cut after 40 lines otherwise).
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Close events without a replay (e.g. fixed by hand), with a note: one by its id at once,
    /// or a selection (--since, --filter) after a dry run.
    Resolve {
        /// The gateway's id (evt_…) or the provider's own id; or leave it out and select.
        id: Option<String>,
        /// Why (kept in the audit log).
        #[arg(long)]
        note: String,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// The replay filter language, e.g. "outcome = failed AND error_code = E_DUP".
        #[arg(long)]
        filter: Option<String>,
        /// Resolve the selection for real (a selection is a dry run otherwise).
        #[arg(long = "no-dry-run")]
        live: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum ReplaysCommand {
    /// Jobs, newest first.
    List {
        /// running, paused, completed, cancelled or failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        limit: Option<i64>,
        #[arg(long)]
        cursor: Option<String>,
        /// Every page.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One job: its request, counts and why items failed.
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Follow a job to its end (progress bar, Ctrl-C to cancel, the exit code of a live run).
    Watch {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a running or paused job (items already sent stay sent).
    Cancel {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop sending until resumed (the job keeps its place).
    Pause {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Go on with a paused job.
    Resume {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the whole log.
    Verify,
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Rewrite the SQLite database of a config (gateway stopped) with `auto_vacuum =
    /// INCREMENTAL`, so the pages retention frees go back to the file system. Needs room for
    /// a second copy of the file while it runs.
    Compact {
        /// The gateway's config file.
        #[arg(long, env = "HOOKWARDEN_CONFIG", default_value = "hookwarden.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token (admins only); it is shown once.
    Create {
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "operator")]
        role: String,
        /// A source the token may act on (repeat for several); without it, every source.
        #[arg(long = "source")]
        sources: Vec<String>,
        /// When it expires: an RFC 3339 time or a duration from now (30d); default never.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Every token: role, sources, expiry, whether revoked (admins only).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a token by its id (`tok_…`); it stops working at once (admins only).
    Revoke {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new ed25519 key pair: the seed for the handler, the public key for the config.
    Generate {
        /// The key's id, as the handler sends it in `receipt-key`.
        #[arg(long, default_value = "handler-1")]
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Before any thread starts: the `time` crate reads the local offset only then.
    cli::read_local_offset();
    let cli = Cli::parse();
    if let Command::Serve { config } = cli.command {
        return serve(config, cli.log_format);
    }
    restore_default_sigpipe();
    if let Err(err) = telemetry::init(cli.log_format, None) {
        eprintln!("hookwarden: {err}");
    }
    match cli.command {
        Command::Keys(KeysCommand::Generate { id, json }) => {
            generate_key(&id, json);
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { file, json }) => match cli::config_check(&file, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("hookwarden: {err}");
                ExitCode::from(2)
            }
        },
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hookwarden", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("hookwarden: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Demo { port, speed } => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(cli::demo(port, speed)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("hookwarden: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        command => remote(command),
    }
}

/// Runs one of the commands that talk to the admin API.
fn remote(command: Command) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match command {
            Command::Replay { mut args, remote } => {
                args.json = remote.json;
                cli::replay(&api(&remote)?, args).await
            }
            Command::Reconcile { mut args, remote } => {
                args.json = remote.json;
                cli::reconcile(&api(&remote)?, args).await
            }
            Command::Events(EventsCommand::List {
                source,
                since,
                until,
                outcome,
                filter,
                provider_id,
                limit,
                cursor,
                all,
                remote,
            }) => {
                let query = cli::EventsQuery { source, since, until, outcome, filter, limit, provider_id, cursor, all };
                cli::events_list(&api(&remote)?, query, remote.json).await
            }
            Command::Events(EventsCommand::Show { id, source, full, remote }) => {
                cli::event_show(&api(&remote)?, &id, source.as_deref(), full, remote.json).await
            }
            Command::Events(EventsCommand::Resolve { id, note, source, since, until, filter, live, remote }) => {
                let args = cli::ResolveArgs { id, note, source, since, until, filter, live };
                cli::events_resolve(&api(&remote)?, args, remote.json).await
            }
            Command::Replays(ReplaysCommand::List { state, source, limit, cursor, all, remote }) => {
                let query = cli::ReplaysQuery { state, source, limit, cursor, all };
                cli::replays_list(&api(&remote)?, query, remote.json).await
            }
            Command::Replays(ReplaysCommand::Show { id, remote }) => {
                cli::replays_show(&api(&remote)?, &id, remote.json).await
            }
            Command::Replays(ReplaysCommand::Watch { id, remote }) => {
                cli::replays_watch(&api(&remote)?, &id, remote.json).await
            }
            Command::Replays(ReplaysCommand::Cancel { id, remote }) => {
                cli::replays_act(&api(&remote)?, &id, "cancel", remote.json).await
            }
            Command::Replays(ReplaysCommand::Pause { id, remote }) => {
                cli::replays_act(&api(&remote)?, &id, "pause", remote.json).await
            }
            Command::Replays(ReplaysCommand::Resume { id, remote }) => {
                cli::replays_act(&api(&remote)?, &id, "resume", remote.json).await
            }
            Command::Summary { source, since, until, bucket, remote } => {
                cli::summary(&api(&remote)?, source, since, until, bucket, remote.json).await
            }
            Command::Audit { action: Some(AuditCommand::Verify), remote, .. } => {
                cli::audit_verify(&api(&remote)?, remote.json).await
            }
            Command::Storage { action: None, remote } => cli::storage(&api(&remote)?, remote.json).await,
            Command::Storage { action: Some(StorageCommand::Compact { config }), .. } => {
                cli::storage_compact(&config).await
            }
            Command::Audit { action: None, since, until, remote } => {
                cli::audit(&api(&remote)?, since, until, remote.json).await
            }
            Command::Tokens(TokensCommand::Create { name, role, sources, expires, remote }) => {
                let new = cli::NewToken { name, role, sources, expires };
                cli::tokens_create(&api(&remote)?, new, remote.json).await
            }
            Command::Export { config, source, since, until, output } => {
                cli::export(cli::ExportArgs { config, source, since, until, output }).await
            }
            Command::Import { files, config } => cli::import(&config, &files).await,
            Command::Tokens(TokensCommand::List { remote }) => cli::tokens_list(&api(&remote)?, remote.json).await,
            Command::Tokens(TokensCommand::Revoke { id, remote }) => {
                cli::tokens_revoke(&api(&remote)?, &id, remote.json).await
            }
            Command::Serve { .. }
            | Command::Keys(_)
            | Command::Config(_)
            | Command::Completions { .. }
            | Command::Man
            | Command::Demo { .. } => unreachable!("handled in main"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Exit(code)) => ExitCode::from(code),
        Err(err @ CliError::Usage(_)) => {
            eprintln!("hookwarden: {err}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("hookwarden: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so `hookwarden man | head` would panic on the closed pipe. A command
/// that prints ends quietly instead, as other command-line tools do. Not for `serve`: its
/// sockets must see a closed peer as an error, not a signal.
fn restore_default_sigpipe() {
    // SAFETY: called at start-up before any other thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn api(remote: &Remote) -> Result<Api, CliError> {
    Api::new(&remote.server, remote.token.clone())
}

fn generate_key(id: &str, json: bool) {
    let key = receipts_sdk::receipt::ReceiptKey::generate(id);
    let line = format!("receipt_keys = [{{ id = \"{id}\", public_key = \"{}\" }}]", key.public_key_base64());
    if json {
        let out = serde_json::json!({
            "id": id,
            "seed": key.seed_base64(),
            "public_key": key.public_key_base64(),
            "config": line,
        });
        println!("{out}");
    } else {
        println!("key id:      {id}");
        println!("seed:        {}   (secret: give it to the handler only, e.g. RECEIPT_KEY_SEED)", key.seed_base64());
        println!("public key:  {}", key.public_key_base64());
        println!();
        println!("Add to the source in the gateway's config:");
        println!("{line}");
    }
}

fn serve(path: PathBuf, log_format: LogFormat) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("hookwarden: {err}");
            return ExitCode::from(2);
        }
    };
    // Flushes the spans still queued when `serve` returns (after the runtime has stopped).
    let _telemetry = match telemetry::init(log_format, Some(&config.telemetry)) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("hookwarden: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for addr in std::iter::once(config.listen).chain(config.admin_listen) {
            match listen(addr) {
                Ok(listener) => listeners.push(listener),
                Err(err) => {
                    eprintln!("hookwarden: cannot listen on {addr}: {err}");
                    return ExitCode::from(2);
                }
            }
        }
        let mut listeners = listeners.into_iter();
        let listeners =
            hookwarden::Listeners { public: listeners.next().expect("the public listener"), admin: listeners.next() };
        match hookwarden::run(config, listeners, Arc::new(SystemClock), hookwarden::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("hookwarden: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Connections the kernel queues for the gateway before it accepts them. The standard
/// library's 128 overflowed when ~200 connections opened at once (a load test; a fleet of
/// provider retries after an outage looks the same), and each overflowed one waited a second
/// for its SYN to be retried. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
