//! The command line's grammar: which process or client one invocation of `wasmloop`
//! is (the master, a worker, a compile child, or a client command) and its
//! arguments. Each part owns its own arguments' meaning; this module only names them.

use clap::{Parser, Subcommand};

/// wasmloop: serve WebAssembly HTTP handlers. Async handlers run on the event loop,
/// sync handlers on a bounded thread pool, each request in its own sandbox.
#[derive(Debug, Parser)]
#[command(name = "wasmloop", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a wasi:http component: a master process supervising `--workers` worker
    /// processes that share the listening socket.
    Serve(Box<crate::config::ServeConfig>),
    /// One worker process, started by `serve`'s master with the listener inherited
    /// as file descriptor 3. Not for direct use.
    #[command(hide = true)]
    Worker(Box<crate::config::ServeConfig>),
    /// Create a handler crate, ready to build: `wasmloop new NAME [--async]`.
    New(crate::cli::template::NewArgs),
    /// Say what limits a running server's throughput, from its last minute of metrics.
    Doctor(crate::cli::doctor::DoctorArgs),
    /// Manage tenants (with the admin token).
    Tenant {
        #[command(subcommand)]
        command: crate::cli::TenantCommand,
        #[command(flatten)]
        connection: crate::cli::Connection,
    },
    /// Bind hosts to tenants (with the admin token).
    Host {
        #[command(subcommand)]
        command: crate::cli::HostCommand,
        #[command(flatten)]
        connection: crate::cli::Connection,
    },
    /// Deploy a new version of an app (a .wasm file, or every app of a manifest).
    Deploy {
        #[command(flatten)]
        args: crate::cli::DeployArgs,
        #[command(flatten)]
        connection: crate::cli::Connection,
    },
    /// List your apps.
    Apps {
        #[command(flatten)]
        connection: crate::cli::Connection,
    },
    /// List an app's versions.
    Versions {
        app: String,
        #[command(flatten)]
        connection: crate::cli::Connection,
    },
    /// Make an earlier version of an app active (default: the one before the active).
    Rollback {
        app: String,
        version: Option<u64>,
        #[command(flatten)]
        connection: crate::cli::Connection,
    },
    /// Delete an app and its versions.
    Delete {
        app: String,
        #[command(flatten)]
        connection: crate::cli::Connection,
    },
    /// Compile one upload into an artifact; run by the master in a bounded child
    /// process. Not for direct use.
    #[command(hide = true)]
    Compile(crate::deploy::compile::CompileArgs),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values_hold() {
        let cli = Cli::try_parse_from(["wasmloop", "serve", "x.wasm"]).unwrap();
        let Command::Serve(cfg) = cli.command else {
            unreachable!("parsed `serve`")
        };
        cfg.validate().unwrap();
        assert_eq!(cfg.threads, 40);
        assert_eq!(cfg.fuel, 10_000_000_000);
        assert_eq!(cfg.max_memory, 128 << 20);
        assert_eq!(cfg.max_body, 10 << 20);
        assert_eq!(cfg.timeout, Duration::from_secs(30));
        assert_eq!(cfg.timeout_ticks(), 15_000);
    }

    #[test]
    fn contradictory_settings_are_refused() {
        let cli = Cli::try_parse_from(["wasmloop", "serve", "--threads", "0", "x.wasm"]).unwrap();
        let Command::Serve(cfg) = cli.command else {
            unreachable!("parsed `serve`")
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("--threads")
        );
    }
}
