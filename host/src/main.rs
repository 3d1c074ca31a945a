//! The `wasmloop` binary: parses the command line ([`wasmloop::command`]) and hands
//! over to the master (`serve`), one of its worker processes (`worker`), a compile
//! child (`compile`) or a client command; and sets the exit code. Exit 0 after a clean
//! stop, 1 when start-up fails (the reason is printed), 2 for bad arguments.

use std::process::ExitCode;

use wasmloop::cli::{self, doctor, template};
use wasmloop::command::{self, Command};
use wasmloop::{deploy, master, worker};

/// mimalloc rather than glibc's malloc: every request allocates and frees a store's
/// worth of small objects, and the compilers allocate from several threads at once
/// (docs/benchmarks.md, "The allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = command::parse();
    let result = match cli.command {
        Command::Serve(config) => master::run(*config),
        Command::Worker(config) => worker::run_process(*config),
        Command::New(args) => template::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Compile(args) => return deploy::compile::run_compile(&args),
        Command::Tenant {
            command,
            connection,
        } => cli::tenant(&connection, &command),
        Command::Host {
            command,
            connection,
        } => cli::host(&connection, &command),
        Command::Deploy { args, connection } => cli::deploy(&connection, &args),
        Command::Apps { connection } => cli::apps(&connection),
        Command::Versions { app, connection } => cli::versions(&connection, &app),
        Command::Rollback {
            app,
            version,
            connection,
        } => cli::rollback(&connection, &app, version),
        Command::Delete { app, connection } => cli::delete(&connection, &app),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
