//! The worker's side of the link to its master (the messages are in
//! [`crate::protocol`]): the route tables it reads on stdin, applied off the loop,
//! and the reports it writes on stdout (ready, heartbeats, metrics, applied tables,
//! retire) from a task on the loop, so that a loop that stops turning stops the
//! heartbeats and the master sees it.

use std::rc::Rc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Report, TableMessage, parse_table};
use crate::worker::app::{Defaults, Engines};
use crate::worker::front_door::Server;
use crate::worker::routes::{self, TenantMap};

/// How often a worker sends its metrics to the master.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// Writes `ready`, then a heartbeat every `interval` and `retire` once the quota is
/// reached, from this task on the loop: a loop that stops turning stops the
/// heartbeats, and the master sees it. A failed write means the master is gone.
pub async fn report_to_master(
    server: Rc<Server>,
    interval: Duration,
    master_gone: CancellationToken,
    mut applied: tokio::sync::mpsc::UnboundedReceiver<u64>,
) {
    use tokio::io::AsyncWriteExt as _;
    let mut out = tokio::io::stdout();
    let mut beat = tokio::time::interval(interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics = tokio::time::interval(METRICS_INTERVAL);
    metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retired = false;
    let mut report = Report::Ready;
    loop {
        if out.write_all(report.line().as_bytes()).await.is_err() || out.flush().await.is_err() {
            tracing::warn!("the master is gone; stopping");
            master_gone.cancel();
            return;
        }
        report = tokio::select! {
            _ = beat.tick() => Report::Beat { served: server.served() },
            _ = metrics.tick() => {
                server.reap_idle_instances();
                Report::Metrics(Box::new(server.snapshot()))
            }
            Some(generation) = applied.recv() => Report::Applied(generation),
            () = server.quota_reached(), if !retired => {
                retired = true;
                Report::Retire
            }
        };
    }
}

/// Reads the master's first table line from stdin (start-up, before the loop runs).
pub fn read_first_table() -> anyhow::Result<TableMessage> {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("failed to read the route table from the master")?;
    parse_table(&line).context("the master's first line is not a route table")
}

/// Applies every table the master sends on stdin: loads new apps on a blocking
/// thread, swaps the table in, and tells the master which generation it serves.
pub async fn follow_tables(
    server: Rc<Server>,
    engines: Engines,
    defaults: Defaults,
    tenants: TenantMap,
    applied: tokio::sync::mpsc::UnboundedSender<u64>,
) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tenants = Some(tenants);
    let _ = applied.send(server.table().generation);
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(message) = parse_table(&line) else {
            tracing::warn!("ignoring a line from the master that is not a route table");
            continue;
        };
        let deployed = message.app_names();
        let previous = server.table().apps.clone();
        let (engines, defaults) = (engines.clone(), defaults.clone());
        let mut map = tenants.take().unwrap_or_default();
        let built = tokio::task::spawn_blocking(move || {
            let table = routes::build(&engines, &message, &defaults, &previous, &mut map);
            (table, map)
        })
        .await;
        match built {
            Ok((table, map)) => {
                tenants = Some(map);
                let generation = table.generation;
                server.set_table(table);
                server.retain_apps(|app| crate::metrics::keeps_series(app, &deployed));
                tracing::info!(generation, "route table applied");
                let _ = applied.send(generation);
            }
            Err(e) => tracing::error!("failed to build a route table: {e}"),
        }
    }
}
