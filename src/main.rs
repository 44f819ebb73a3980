//! The `pinwheel` binary: parse arguments, start logging, run the command,
//! turn its result into an exit code. Everything else is in the library.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use pinwheel::cli::{self, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let stdout = std::io::stdout();
    match cli::run(cli.command, &mut stdout.lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = std::io::stderr().write_all(err.report().as_bytes());
            ExitCode::from(err.exit_code())
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
