//! A private PostgreSQL server for the tests that share a registry between nodes:
//! `initdb` into a fresh directory, `pg_ctl` on a free loopback port, trust
//! authentication, stopped and removed when dropped. Tests can stop and start it
//! again to play an outage.
//!
//! The server binaries come from Debian's `postgresql` package (found under
//! `/usr/lib/postgresql/*/bin`, on `PATH`, or in `WASMLOOP_PG_BINDIR`). Without them
//! [`Postgres::start`] returns `None` and the test says it was skipped, unless
//! `WASMLOOP_REQUIRE_POSTGRES=1` (which CI sets) makes that a failure. PostgreSQL
//! refuses to run as root: as root, its commands run as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running PostgreSQL server, owned by one test.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn find_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WASMLOOP_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Starts a fresh server, or returns `None` (after saying so) when PostgreSQL is
    /// not installed and the environment does not require it.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = find_bindir() else {
            assert!(
                std::env::var("WASMLOOP_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "WASMLOOP_REQUIRE_POSTGRES=1 but no PostgreSQL server is installed (apt-get install postgresql)"
            );
            eprintln!(
                "SKIPPED: no PostgreSQL server installed (apt-get install postgresql); .ci/run installs it"
            );
            return None;
        };
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("wasmloop-pg-{}", random_suffix()));
        std::fs::create_dir_all(&dir).expect("a directory for the database");
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "could not hand {} to the postgres user",
                dir.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = Postgres {
            bin,
            dir,
            port,
            as_postgres,
        };
        pg.run(
            "initdb",
            &[
                "--auth=trust",
                "--username=wasmloop",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
                &pg.data().display().to_string(),
            ],
        );
        pg.up();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command for one of the server's tools, as the postgres user when root.
    fn tool(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = self
            .tool(tool)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("failed to run {tool}: {e}"));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        let data = self.data().display().to_string();
        self.run(
            "pg_ctl",
            &[
                "start", "-w", "-t", "60", "-D", &data, "-l", &log, "-o", &options,
            ],
        );
    }

    /// Stops the server, ending every connection (a database outage).
    pub fn down(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["stop", "-w", "-m", "fast", "-D", &data]);
    }

    /// A URL for database `name`, created if it does not exist. (Callable from an
    /// async test: the blocking client runs on a thread of its own.)
    pub fn database(&self, name: &str) -> String {
        let admin_url = self.url("postgres");
        let owned = name.to_string();
        std::thread::spawn(move || {
            let name = owned;
            let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
                .expect("a connection to the test server");
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .expect("a query")
                .is_some();
            if !exists {
                admin
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .expect("CREATE DATABASE");
            }
        })
        .join()
        .expect("creating the database");
        self.url(name)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://wasmloop@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's log, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self
            .tool("pg_ctl")
            .args(["stop", "-m", "immediate", "-D", &data])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn random_suffix() -> u64 {
    let mut random = [0u8; 8];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("urandom"),
        &mut random,
    )
    .expect("random bytes");
    u64::from_le_bytes(random)
}
