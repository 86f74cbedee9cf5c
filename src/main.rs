//! The `flagstaff` binary: parse settings, start logging, run the server.

use std::process::ExitCode;

/// mimalloc returns freed memory to the OS and fragments less than glibc's
/// per-thread arenas after large transient parses (imports, snapshots); the
/// wrapper counts live bytes for INFO's `used_memory`.
#[global_allocator]
static GLOBAL: flagstaff::metrics::alloc::Counting<mimalloc::MiMalloc> =
    flagstaff::metrics::alloc::Counting(mimalloc::MiMalloc);

use clap::Parser;
use flagstaff::config::{Cli, LogFormat, Settings, Tool};

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("flagstaff: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if let Some(tool) = cli.tool.take() {
        return run_tool(tool);
    }
    let settings = match Settings::resolve(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flagstaff: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&settings);
    let runtime = if settings.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flagstaff: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(flagstaff::server::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("flagstaff: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_tool(tool: Tool) -> ExitCode {
    let result = match tool {
        Tool::Export {
            addr,
            password,
            pattern,
        } => flagstaff::backup::export(&addr, password.as_deref(), pattern.as_deref())
            .map(|doc| println!("{doc}")),
        Tool::Import {
            addr,
            password,
            file,
        } => flagstaff::backup::import(&addr, password.as_deref(), &file)
            .map(|n| eprintln!("flagstaff: imported {n} flags and segments from {file}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flagstaff: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(settings: &Settings) {
    // A bare level applies to flagstaff; storage internals stay at warn and
    // openraft's own lines are off (it logs every failed heartbeat to an
    // unreachable peer; flagstaff logs when a peer goes and comes back)
    // unless a full filter (`info,openraft=debug`) says otherwise.
    let level = &settings.log_level;
    let directive = if level.contains('=') || level.contains(',') {
        level.clone()
    } else {
        format!("{level},openraft=off,sled=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
