//! The standard `process_*` series (CPU, memory, file descriptors, start time) of the
//! master and of each worker, read from `/proc` when `/metrics` is scraped. The files
//! are the kernel's own counters, read from memory: no disk is touched.

use std::path::Path;

/// One process's figures, as Prometheus's client libraries name them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub open_fds: f64,
    pub max_fds: f64,
    pub start_time_seconds: f64,
}

/// The figures of process `pid`, or `None` if it is gone (or this is not Linux).
pub fn read(pid: u32) -> Option<ProcessStats> {
    let dir = Path::new("/proc").join(pid.to_string());
    #[expect(
        clippy::disallowed_methods,
        reason = "/proc is in memory; the master's admin thread"
    )]
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // After the command name, which may hold spaces and parentheses.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as f64;
    #[expect(
        clippy::disallowed_methods,
        reason = "/proc is in memory; the master's admin thread"
    )]
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    })?;
    let open_fds = std::fs::read_dir(dir.join("fd")).map_or(0, |d| d.count()) as f64;
    #[expect(
        clippy::disallowed_methods,
        reason = "/proc is in memory; the master's admin thread"
    )]
    let max_fds = std::fs::read_to_string(dir.join("limits"))
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0);
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        resident_bytes: field(24)? * page,
        virtual_bytes: field(23)?,
        open_fds,
        max_fds,
        start_time_seconds: boot + field(22)? / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_sensibly() {
        // Burn a little CPU so the counter has something to show.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let stats = read(std::process::id()).expect("/proc/self");
        assert!(stats.resident_bytes > 1e6, "{stats:?}");
        assert!(stats.virtual_bytes >= stats.resident_bytes, "{stats:?}");
        assert!(
            stats.open_fds >= 3.0 && stats.max_fds >= stats.open_fds,
            "{stats:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(stats.start_time_seconds <= now + 1.0, "{stats:?}");
        assert!(stats.start_time_seconds > now - 24.0 * 3600.0, "{stats:?}");
        assert!(stats.cpu_seconds >= 0.0, "{stats:?}");
        assert_eq!(read(u32::MAX), None);
    }
}
