//! An app's instance-reuse contract: whether a request gets a fresh sandbox
//! (`none`, the default), an instance that served earlier requests of the same app
//! version (`serial`), or one that serves several of them at once (`concurrent`,
//! wasi:http 0.3 handlers), and the bounds on such an instance: how many requests it
//! serves (a range, one value picked at random per instance, so instances do not
//! all retire at once), how many at once, how long it may sit idle, and the memory
//! at which it is retired. An instance is never shared across tenants, apps or versions, and never
//! reused after a request that trapped, ran out of fuel, passed its deadline or lost
//! its client.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Invalid;
use crate::model::text::parse_size;

/// The most requests one instance may serve at once.
pub const MAX_CONCURRENT: u32 = 1024;

/// Whether requests share instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReuseMode {
    /// A fresh sandbox per request.
    #[default]
    None,
    /// One request at a time per instance; the instance serves the next one.
    Serial,
    /// Several requests at once in one instance (wasi:http 0.3 handlers on the
    /// loop; other handlers reuse serially).
    Concurrent,
}

impl std::str::FromStr for ReuseMode {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "none" => Ok(ReuseMode::None),
            "serial" => Ok(ReuseMode::Serial),
            "concurrent" => Ok(ReuseMode::Concurrent),
            other => Err(Invalid(format!(
                "reuse must be none, serial or concurrent, not {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for ReuseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReuseMode::None => "none",
            ReuseMode::Serial => "serial",
            ReuseMode::Concurrent => "concurrent",
        })
    }
}

/// An app's reuse contract, as deployed (every field has a default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reuse {
    pub mode: ReuseMode,
    /// Requests one instance serves: at least the first, at most the second, picked
    /// at random per instance.
    pub max_requests: (u64, u64),
    /// Requests one instance serves at once (`concurrent` only).
    pub max_concurrent: u32,
    /// Milliseconds an instance may sit unused before it is dropped.
    pub idle_timeout_ms: u64,
    /// Linear memory (bytes) past which an instance is retired after its request.
    pub memory_high_water: Option<u64>,
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse {
            mode: ReuseMode::None,
            max_requests: (1000, 1500),
            max_concurrent: 16,
            idle_timeout_ms: 30_000,
            memory_high_water: None,
        }
    }
}

impl Reuse {
    pub fn is_default(&self) -> bool {
        *self == Reuse::default()
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Sets one field from its text form (`reuse`, `reuse_max_requests`,
    /// `reuse_max_concurrent`, `reuse_idle_timeout_ms`, `reuse_memory_high_water`),
    /// as deploy query
    /// parameters and flags give them.
    /// A value that breaks a bound changes nothing.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Invalid> {
        let mut next = *self;
        match key {
            "reuse" => next.mode = value.parse()?,
            "reuse_max_requests" => next.max_requests = parse_range(value)?,
            "reuse_max_concurrent" => {
                next.max_concurrent = value.parse().map_err(|_| {
                    Invalid(format!("reuse_max_concurrent: {value:?} is not a number"))
                })?;
            }
            "reuse_idle_timeout_ms" => {
                next.idle_timeout_ms = value.parse().map_err(|_| {
                    Invalid(format!("reuse_idle_timeout_ms: {value:?} is not a number"))
                })?;
            }
            "reuse_memory_high_water" => {
                next.memory_high_water = Some(
                    parse_size(value)
                        .map_err(|e| Invalid(format!("reuse_memory_high_water: {e}")))?,
                );
            }
            other => return Err(Invalid(format!("unknown reuse setting {other:?}"))),
        }
        next.check()?;
        *self = next;
        Ok(())
    }

    /// Whether the bounds make sense.
    pub fn check(&self) -> Result<(), Invalid> {
        let (low, high) = self.max_requests;
        if low == 0 || low > high {
            return Err(Invalid(format!(
                "reuse_max_requests must be N or LOW-HIGH with 1 <= LOW <= HIGH, not {low}-{high}"
            )));
        }
        if !(1..=MAX_CONCURRENT).contains(&self.max_concurrent) {
            return Err(Invalid(format!(
                "reuse_max_concurrent must be from 1 to {MAX_CONCURRENT}, not {}",
                self.max_concurrent
            )));
        }
        Ok(())
    }

    /// Requests a new instance serves before it is retired: a value of
    /// `max_requests` picked with `random` (any u64).
    pub fn pick_max_requests(&self, random: u64) -> u64 {
        let (low, high) = self.max_requests;
        low + random % (high - low + 1)
    }
}

/// `N` or `LOW-HIGH`.
pub fn parse_range(text: &str) -> Result<(u64, u64), Invalid> {
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| Invalid(format!("{text:?} is not N or LOW-HIGH")))
    };
    let range = match text.split_once('-') {
        Some((low, high)) => (number(low)?, number(high)?),
        None => {
            let n = number(text)?;
            (n, n)
        }
    };
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_bad_ones_are_refused() {
        let mut reuse = Reuse::default();
        reuse.set("reuse", "serial").unwrap();
        reuse.set("reuse_max_requests", "10-20").unwrap();
        reuse.set("reuse_memory_high_water", "64M").unwrap();
        assert_eq!(reuse.mode, ReuseMode::Serial);
        assert_eq!(reuse.max_requests, (10, 20));
        assert_eq!(reuse.memory_high_water, Some(64 << 20));
        assert!(reuse.set("reuse_max_requests", "0").is_err());
        assert!(reuse.set("reuse_max_requests", "9-3").is_err());
        reuse.set("reuse", "concurrent").unwrap();
        assert_eq!(reuse.mode, ReuseMode::Concurrent);
        reuse.set("reuse_max_concurrent", "64").unwrap();
        assert_eq!(reuse.max_concurrent, 64);
        assert!(reuse.set("reuse_max_concurrent", "0").is_err());
        assert!(reuse.set("reuse_max_concurrent", "5000").is_err());
        assert_eq!(reuse.max_concurrent, 64, "a refused value changes nothing");
        assert!(
            reuse
                .set("reuse", "always")
                .unwrap_err()
                .0
                .contains("concurrent")
        );
        assert!((10..=20).contains(&reuse.pick_max_requests(u64::MAX)));
        let picks: std::collections::BTreeSet<u64> = (0..100)
            .map(|r| {
                Reuse {
                    max_requests: (3, 5),
                    ..reuse
                }
                .pick_max_requests(r)
            })
            .collect();
        assert_eq!(picks, [3, 4, 5].into());
    }
}
