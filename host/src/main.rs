//! The `wasmloop` binary: arguments, then the master (`serve`), one of its worker
//! processes (`worker`, started by the master) or a new handler crate (`new`); and the
//! exit code. Exit 0 after a clean stop, 1 when start-up fails (the reason is printed),
//! 2 for bad arguments.

use std::process::ExitCode;

use clap::Parser as _;
use wasmloop::config::{Cli, Command, NewArgs};
use wasmloop::template::{SdkSource, Template};
use wasmloop::{client, supervisor, worker};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => supervisor::run(*config),
        Command::Worker(config) => worker::run_process(*config),
        Command::New(args) => new(&args),
        Command::Doctor(args) => wasmloop::admin::doctor_cli(&args.admin, args.json),
        Command::Compile(args) => return wasmloop::deploy::run_compile(&args),
        Command::Tenant {
            command,
            connection,
        } => client::tenant(&connection, &command),
        Command::Deploy { args, connection } => client::deploy(&connection, &args),
        Command::Apps { connection } => client::apps(&connection),
        Command::Versions { app, connection } => client::versions(&connection, &app),
        Command::Rollback {
            app,
            version,
            connection,
        } => client::rollback(&connection, &app, version),
        Command::Delete { app, connection } => client::delete(&connection, &app),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `wasmloop new`: writes the crate and says how to build and serve it.
fn new(args: &NewArgs) -> anyhow::Result<()> {
    let template = Template {
        name: args.name.clone(),
        is_async: args.is_async,
        sdk: SdkSource::find(args.sdk_path.as_deref())?,
    };
    let dir = args.dir.join(&args.name);
    template.write(&dir)?;
    let style = if args.is_async {
        "an async fn handler: it runs on the event loop"
    } else {
        "a plain fn handler: it runs on the thread pool"
    };
    println!("Created {} ({style}).", dir.display());
    if let SdkSource::Path(path) = &template.sdk {
        println!("It uses the SDK at {}.", path.display());
    }
    println!();
    println!("    cd {}", dir.display());
    println!("    cargo build --release");
    println!(
        "    wasmloop serve target/wasm32-wasip2/release/{}.wasm",
        template.wasm_name()
    );
    Ok(())
}
