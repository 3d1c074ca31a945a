//! Where a handler runs: the decision ([`Mode`]) and what an operator or a tenant may
//! ask for ([`ModeChoice`]). One spelling everywhere a mode is stored, parsed or
//! printed: `auto`, `loop`, `pool`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a handler's requests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// On the worker's event loop, preempted at epoch ticks.
    Loop,
    /// On the bounded thread pool, under the fuel limit.
    Pool,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Loop => "loop",
            Mode::Pool => "pool",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "loop" => Ok(Mode::Loop),
            "pool" => Ok(Mode::Pool),
            other => Err(format!("mode {other:?} is not loop or pool")),
        }
    }
}

/// Where a handler should run: decided from its export's type, or forced.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    /// Decide from the handler export's type: async func on the loop, sync on the pool.
    #[default]
    Auto,
    /// Run on the event loop, preempted at every epoch tick.
    Loop,
    /// Run on the thread pool, under the fuel limit.
    Pool,
}

impl ModeChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            ModeChoice::Auto => "auto",
            ModeChoice::Loop => "loop",
            ModeChoice::Pool => "pool",
        }
    }

    /// The mode forced by this choice, if any.
    pub fn forced(self) -> Option<Mode> {
        match self {
            ModeChoice::Auto => None,
            ModeChoice::Loop => Some(Mode::Loop),
            ModeChoice::Pool => Some(Mode::Pool),
        }
    }
}

impl From<Mode> for ModeChoice {
    fn from(mode: Mode) -> ModeChoice {
        match mode {
            Mode::Loop => ModeChoice::Loop,
            Mode::Pool => ModeChoice::Pool,
        }
    }
}

impl fmt::Display for ModeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModeChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<ModeChoice, String> {
        match text {
            "auto" => Ok(ModeChoice::Auto),
            "loop" => Ok(ModeChoice::Loop),
            "pool" => Ok(ModeChoice::Pool),
            other => Err(format!("mode {other:?} is not auto, loop or pool")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_back_what_they_print() {
        for mode in [Mode::Loop, Mode::Pool] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{mode}\""));
        }
        for choice in [ModeChoice::Auto, ModeChoice::Loop, ModeChoice::Pool] {
            assert_eq!(choice.to_string().parse::<ModeChoice>(), Ok(choice));
        }
        assert!("auto".parse::<Mode>().is_err());
        assert!("Loop".parse::<ModeChoice>().is_err());
        assert_eq!(ModeChoice::Auto.forced(), None);
        assert_eq!(ModeChoice::from(Mode::Pool).forced(), Some(Mode::Pool));
    }
}
