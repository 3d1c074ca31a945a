//! The command line's grammar: which process or client one invocation of `wasmloop`
//! is (the master, a worker, a compile child, or a client command) and its
//! arguments. Each part owns its own arguments' meaning; this module only names them,
//! and reads `serve --config FILE` (a TOML file of serve's flags) into them, below
//! the environment and the command line.

use std::ffi::OsString;

use anyhow::{Context as _, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory as _, Parser, Subcommand};

use crate::protocol::CONFIG_SNAPSHOT_ENV;

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
    /// One worker process, started by `serve`'s master with the listeners inherited
    /// as file descriptors 3, 4, ... Not for direct use.
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

/// Parses this process's command line, with the settings of `--config FILE` (or
/// `WASMLOOP_CONFIG`) under it. A bad file is exit 2, like a bad flag.
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    match with_config_file(args, |name| std::env::var_os(name)) {
        Ok((args, snapshot)) => {
            let mut cli = Cli::parse_from(args);
            if let Command::Serve(config) = &mut cli.command {
                config.config_snapshot = snapshot;
            }
            cli
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// `args` with a `--NAME=VALUE` added for each setting of the config file that
/// neither the command line nor the environment gives; and, for a master, the
/// settings to hand its workers. Anything but `serve` and `worker` is left alone.
pub fn with_config_file(
    mut args: Vec<OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> anyhow::Result<(Vec<OsString>, Option<String>)> {
    let sub = args
        .get(1)
        .and_then(|a| a.to_str())
        .unwrap_or_default()
        .to_string();
    if sub != "serve" && sub != "worker" {
        return Ok((args, None));
    }
    // What the command line says (a bad one is clap's to report, with its usage).
    let Ok(matches) = Cli::command().try_get_matches_from(&args) else {
        return Ok((args, None));
    };
    let Some(given) = matches.subcommand_matches(&sub) else {
        return Ok((args, None));
    };
    let (text, origin) = match (sub.as_str(), env(CONFIG_SNAPSHOT_ENV)) {
        ("worker", Some(snapshot)) => (
            snapshot.to_string_lossy().into_owned(),
            "the master's config file".to_string(),
        ),
        _ => {
            let Some(path) = given.get_one::<std::path::PathBuf>("config") else {
                return Ok((args, None));
            };
            #[expect(clippy::disallowed_methods, reason = "start-up, before any loop")]
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--config {}: cannot read it", path.display()))?;
            (text, path.display().to_string())
        }
    };
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("--config {origin}: not valid TOML"))?;
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("`serve` is a subcommand");
    let mut added = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        let Some(arg) = serve.get_arguments().find(|a| {
            a.get_long() == Some(name.as_str()) || (a.is_positional() && a.get_id() == key.as_str())
        }) else {
            bail!(
                "--config {origin}: unknown setting `{key}` (a setting is one of `wasmloop serve`'s flags without its dashes: `workers = 4`)"
            );
        };
        if name == "config" {
            bail!("--config {origin}: a config file cannot name another");
        }
        if sub == "worker" && name == "registry" {
            continue;
        }
        if let Some(ValueSource::CommandLine | ValueSource::EnvVariable) =
            given.value_source(arg.get_id().as_str())
        {
            continue;
        }
        let text = |v: &toml::Value| -> anyhow::Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => bail!("--config {origin}: `{key}` must be a string, a number or a boolean"),
            })
        };
        let flag = |v: String| match arg.get_long() {
            Some(long) => OsString::from(format!("--{long}={v}")),
            None => OsString::from(v),
        };
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => {
                added.push(OsString::from(format!("--{name}")));
            }
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue, _) => {
                bail!("--config {origin}: `{key}` is a switch: give true or false")
            }
            (ArgAction::Append, toml::Value::Array(items)) => {
                for item in items {
                    added.push(flag(text(item)?));
                }
            }
            (_, toml::Value::Array(items)) => {
                let items: anyhow::Result<Vec<String>> = items.iter().map(text).collect();
                added.push(flag(items?.join(",")));
            }
            (_, value) => added.push(flag(text(value)?)),
        }
    }
    args.extend(added);
    // The workers get the file as read, less the registry's URL.
    let snapshot = (sub == "serve").then(|| {
        table.remove("registry");
        table.to_string()
    });
    Ok((args, snapshot))
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

    fn expand(file: &str, cli: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
        let dir = std::env::temp_dir().join(format!("wasmloop-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", file.len()));
        #[expect(clippy::disallowed_methods, reason = "a test")]
        std::fs::write(&path, file).unwrap();
        let mut args: Vec<OsString> = ["wasmloop", "serve"].map(OsString::from).to_vec();
        args.push(format!("--config={}", path.display()).into());
        args.extend(cli.iter().map(OsString::from));
        let env: Vec<(String, OsString)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        let (args, _) = with_config_file(args, |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })?;
        Ok(args
            .into_iter()
            .skip(3 + cli.len())
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn a_config_file_fills_in_what_the_command_line_does_not_say() {
        let file = r#"
            workers = 3
            no_access_log = true
            no-proxy-headers = false
            allow-outbound = ["a.example", "b.example"]
            var = ["A=1", "B=x=y"]
            max-body = "2M"
            component = "app.wasm"
        "#;
        let added = expand(file, &["--workers=5"], &[]).unwrap();
        assert_eq!(
            added,
            [
                "--allow-outbound=a.example",
                "--allow-outbound=b.example",
                "app.wasm",
                "--max-body=2M",
                "--no-access-log",
                "--var=A=1",
                "--var=B=x=y",
            ],
            "the command line's --workers wins; false switches add nothing"
        );
        // The parsed result: the file's settings under the command line's.
        let mut args = vec!["wasmloop", "serve", "--workers=5"];
        args.extend(added.iter().map(String::as_str));
        let Command::Serve(cfg) = Cli::try_parse_from(args).unwrap().command else {
            unreachable!()
        };
        assert_eq!(cfg.workers, Some(5));
        assert!(cfg.no_access_log);
        assert_eq!(cfg.max_body, 2 << 20);
        assert_eq!(cfg.vars.len(), 2);
    }

    #[test]
    fn a_config_file_names_its_mistakes() {
        for (file, says) in [
            ("wrokers = 3", "unknown setting `wrokers`"),
            ("no-access-log = \"yes\"", "is a switch"),
            ("workers = { n = 3 }", "must be a string"),
            ("config = \"other.toml\"", "cannot name another"),
            ("workers = ", "not valid TOML"),
        ] {
            let err = expand(file, &[], &[]).unwrap_err().to_string();
            assert!(err.contains(says), "{file}: {err}");
        }
        let missing = with_config_file(
            ["wasmloop", "serve", "--config=/nonexistent/wasmloop.toml"]
                .map(OsString::from)
                .to_vec(),
            |_| None,
        )
        .unwrap_err();
        assert!(missing.to_string().contains("cannot read it"), "{missing}");
    }

    #[test]
    fn workers_take_the_masters_snapshot_without_the_registry() {
        let snapshot = "workers = 2\nregistry = \"postgres://u:secret@db/x\"\nfuel = 5\n";
        let args = ["wasmloop", "worker", "--config=/gone.toml"]
            .map(OsString::from)
            .to_vec();
        let (args, handed) = with_config_file(args, |name| {
            (name == CONFIG_SNAPSHOT_ENV).then(|| OsString::from(snapshot))
        })
        .unwrap();
        let args: Vec<String> = args.into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(args[3..], ["--fuel=5", "--workers=2"]);
        assert!(handed.is_none());
        // A master hands on its file without the registry's URL.
        let (_, handed) = {
            let dir = std::env::temp_dir().join(format!("wasmloop-snap-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("c.toml");
            #[expect(clippy::disallowed_methods, reason = "a test")]
            std::fs::write(&path, snapshot).unwrap();
            let args = vec![
                OsString::from("wasmloop"),
                OsString::from("serve"),
                OsString::from(format!("--config={}", path.display())),
            ];
            with_config_file(args, |_| None).unwrap()
        };
        let handed = handed.unwrap();
        assert!(
            handed.contains("workers = 2") && !handed.contains("secret"),
            "{handed}"
        );
    }
}
