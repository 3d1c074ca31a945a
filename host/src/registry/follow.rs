//! Following a shared registry, on every node. A thread keeps one connection that
//! `LISTEN`s on [`pg_registry::CHANNEL`] and sends a wake-up on a channel the master
//! gave it on every notification, after every reconnect and at every
//! `--registry-recheck` (so a notification lost with a connection is healed); the
//! master then re-reads what is active and publishes it to its workers if it changed.
//!
//! The same thread watches the database's health and reports every change through a
//! callback the master gives it (the master shows it on `/healthz` and as
//! `wasmloop_registry_up`); while the database is away the node keeps serving what it
//! has, and the thread reconnects with a backoff of up to 5 s.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::registry::postgres as pg_registry;

/// What the listener learns of the registry's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// A connection is open and listening.
    Up,
    /// The database does not answer, and why (credentials redacted).
    Down(String),
}

/// Starts the listener thread for the registry at `url`. Every message on `wake`
/// asks the master to re-read the registry.
pub fn spawn_listener(
    url: &str,
    recheck: Duration,
    health: impl Fn(Health) + Send + 'static,
    wake: mpsc::UnboundedSender<()>,
) -> anyhow::Result<()> {
    let config = pg_registry::parse(url)?;
    let shown = pg_registry::redact(url);
    std::thread::Builder::new()
        .name("registry-listen".into())
        .spawn(move || listen(&config, &shown, recheck, &health, &wake))?;
    Ok(())
}

fn listen(
    config: &::postgres::Config,
    shown: &str,
    recheck: Duration,
    health: &dyn Fn(Health),
    wake: &mpsc::UnboundedSender<()>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let listening = pg_registry::connect(config).and_then(|mut client| {
            client.batch_execute(&format!("LISTEN {}", pg_registry::CHANNEL))?;
            Ok(client)
        });
        let error = match listening {
            Ok(mut client) => {
                health(Health::Up);
                delay = Duration::from_millis(200);
                // Catch up on whatever changed while no connection listened.
                if wake.send(()).is_err() {
                    return;
                }
                match follow(&mut client, recheck, wake) {
                    Some(error) => error,
                    None => return,
                }
            }
            Err(error) => error,
        };
        health(Health::Down(format!("{shown}: {error}")));
        #[expect(clippy::disallowed_methods, reason = "the listener's own OS thread")]
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Wakes the master once for every burst of notifications and every `recheck`,
/// until the connection fails (returns why) or the master is gone (returns `None`).
fn follow(
    client: &mut ::postgres::Client,
    recheck: Duration,
    wake: &mpsc::UnboundedSender<()>,
) -> Option<::postgres::Error> {
    use ::postgres::fallible_iterator::FallibleIterator as _;
    loop {
        let notified = {
            let mut notifications = client.notifications();
            let first = notifications.timeout_iter(recheck).next();
            match first {
                Ok(Some(_)) => {
                    // Whatever else arrived with it is covered by the same re-read.
                    while let Ok(Some(_)) = notifications.iter().next() {}
                    true
                }
                Ok(None) => false,
                Err(e) => return Some(e),
            }
        };
        // A quiet connection may be a dead one: ask it something.
        if !notified && let Err(e) = client.simple_query("SELECT 1") {
            return Some(e);
        }
        if wake.send(()).is_err() {
            return None;
        }
    }
}
