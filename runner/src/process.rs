//! The `stowage` process around [`crate::cli::run`]: logging, the async runtime and the
//! exit code. It lives in the library so that the binary instantiates nothing itself
//! (the runner is optimised, and optimised crates do not share generic code).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, run};

/// Parse the command line, run the command, and turn its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so that stdout carries only results (e.g. the backup id).
    let filter = EnvFilter::try_from_env("STOWAGE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,cranelift_codegen=warn,wasmtime=warn,aws=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // Jobs set STOWAGE_LOG_FORMAT=json for log collectors; people get readable lines.
    if std::env::var("STOWAGE_LOG_FORMAT").is_ok_and(|format| format == "json") {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, &mut std::io::stdout().lock())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
