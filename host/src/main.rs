//! The `wasmloop` binary: arguments, then the master (`serve`) or one of its worker
//! processes (`worker`, started by the master); and the exit code. Exit 0 after a
//! clean stop, 1 when start-up fails (the reason is printed), 2 for bad arguments.

use std::process::ExitCode;

use clap::Parser as _;
use wasmloop::config::{Cli, Command};
use wasmloop::{supervisor, worker};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => supervisor::run(*config),
        Command::Worker(config) => worker::run_process(*config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
