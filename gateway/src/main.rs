//! The `hookwarden` binary: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use hookwarden::clock::SystemClock;
use hookwarden::config::Config;

#[derive(Parser)]
#[command(name = "hookwarden", version, about = "A receipt-aware webhook gateway with guardrailed replay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The config file.
        #[arg(long, env = "HOOKWARDEN_CONFIG", default_value = "hookwarden.toml")]
        config: PathBuf,
    },
    /// Receipt keys for handlers.
    #[command(subcommand)]
    Keys(KeysCommand),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Keys(KeysCommand::Generate { id, json }) => {
            generate_key(&id, json);
            ExitCode::SUCCESS
        }
    }
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

fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("hookwarden: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("hookwarden: cannot listen on {}: {err}", config.listen);
                return ExitCode::from(2);
            }
        };
        match hookwarden::run(config, listener, Arc::new(SystemClock), hookwarden::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("hookwarden: {err}");
                ExitCode::FAILURE
            }
        }
    })
}
