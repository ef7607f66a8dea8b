//! `snapdump serve` (the HTTP API of `snapdump-server`) and `snapdump generatekey`.

use std::path::PathBuf;
use std::process::ExitCode;

use snapdump::snapshot::guard::GuardianCommand;
use snapdump_server::auth;
use snapdump_server::config::Config;
use snapdump_server::egress;
use snapdump_server::server::{self, ServeError, Settings};

/// Serve dumps over an authenticated HTTP API shaped like dotnet-monitor's.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where to listen: https://HOST:PORT or http://HOST:PORT; repeat the flag or separate
    /// with ';'. Default: the config's urls, else https://127.0.0.1:52323.
    #[arg(long, value_name = "URL", value_delimiter = ';')]
    pub urls: Vec<String>,

    /// A TOML config file: urls, max_concurrent_dumps, [authentication] api_key_hashes,
    /// [tls] certificate and private_key, [egress.NAME] url and options,
    /// [collection_rules.NAME] (watch triggers whose dumps go to an egress provider).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// An egress provider for /dump?egressProvider=NAME: file:///dir, s3://bucket/prefix
    /// (AWS_* variables) or az://container/prefix (AZURE_STORAGE_* variables). Repeatable.
    #[arg(long, value_name = "NAME=URL")]
    pub egress: Vec<String>,

    /// Make a one-time API key for this run and print `Authorization: Bearer <key>`.
    #[arg(long)]
    pub temp_apikey: bool,

    /// Accept requests without a key. Anyone who can connect can then dump processes.
    #[arg(long, conflicts_with = "temp_apikey")]
    pub no_auth: bool,

    /// How many dumps may be under way at once; more get 429. Default: the config's, else 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_dumps: Option<u32>,

    /// Log every request and dump phase.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

fn init_logging(verbose: bool) {
    let level = if verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn settings(args: ServeArgs) -> Result<Settings, ServeError> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let egress = args
        .egress
        .iter()
        .map(|e| egress::parse_argument(e))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Settings {
        urls: args.urls,
        config,
        egress,
        temp_apikey: args.temp_apikey,
        no_auth: args.no_auth,
        max_concurrent_dumps: args.max_concurrent_dumps.map(|n| n as usize),
        snapshot_guardian: snapshot_guardian(),
    })
}

/// `snapdump __snapshot-guard`, which reaps a snapshot's clone inside the target if the
/// server is SIGKILLed mid-dump (as `snapdump dump` does).
fn snapshot_guardian() -> Option<GuardianCommand> {
    std::env::current_exe().ok().map(|program| GuardianCommand {
        program,
        args: vec!["__snapshot-guard".into()],
    })
}

/// `snapdump serve`: runs until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> ExitCode {
    init_logging(args.verbose);
    let result = settings(args).and_then(server::run_blocking);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snapdump serve: {e}");
            match e {
                ServeError::Io(_) => ExitCode::FAILURE,
                _ => ExitCode::from(2),
            }
        }
    }
}

/// `snapdump generatekey`: a new API key, and the config line that stores only its hash.
pub fn generate_key() -> ExitCode {
    let key = auth::generate_key();
    println!("Authorization: Bearer {key}");
    println!();
    println!("Give the key to clients; put only its hash in the config file (--config):");
    println!();
    println!("[authentication]");
    println!("api_key_hashes = [\"{}\"]", auth::hash_key(&key));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "serve",
            "--urls",
            "http://127.0.0.1:0;https://127.0.0.1:1",
            "--egress",
            "local=file:///tmp/dumps",
            "--temp-apikey",
            "--max-concurrent-dumps",
            "2",
        ])
        .unwrap();
        assert_eq!(cli.serve.urls.len(), 2);
        let settings = settings(cli.serve).unwrap();
        assert_eq!(settings.egress[0].0, "local");
        assert_eq!(settings.max_concurrent_dumps, Some(2));
        let guardian = settings.snapshot_guardian.unwrap();
        assert_eq!(Some(guardian.program), std::env::current_exe().ok());
        assert_eq!(guardian.args, ["__snapshot-guard"]);
        assert!(Cli::try_parse_from(["serve", "--temp-apikey", "--no-auth"]).is_err());
        assert!(Cli::try_parse_from(["serve", "--max-concurrent-dumps", "0"]).is_err());
    }
}
