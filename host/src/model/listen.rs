//! Where the public listener is: the address forms of `--listen`, `-b/--bind`
//! (Gunicorn's: `HOST:PORT`, `[::1]:PORT`, `unix:PATH`, `fd://N`), `--uds` and
//! `--fd`, parsed once into [`Bind`]. Binding them is the master's business.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::model::Invalid;

/// One public listener as the operator named it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Bind {
    /// A TCP address (port 0 picks a free port).
    Tcp(SocketAddr),
    /// A unix domain socket at this path.
    Unix(PathBuf),
    /// A listening socket this process was started with, by its descriptor number
    /// (3 or more: 0-2 are the standard streams).
    Fd(i32),
}

/// Where the server listens when no flag says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl FromStr for Bind {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Bind, Invalid> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(Invalid(
                    "`unix:` needs a path: unix:/run/wasmloop.sock".into(),
                ));
            }
            return Ok(Bind::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = text.strip_prefix("fd://") {
            return parse_fd(fd).map(Bind::Fd);
        }
        text.parse::<SocketAddr>().map(Bind::Tcp).map_err(|_| {
            Invalid(format!(
                "`{text}` is not a listener address: give IP:PORT (127.0.0.1:8080, \
                 [::1]:8080, 0.0.0.0:8080), unix:PATH or fd://N"
            ))
        })
    }
}

/// A descriptor number handed to this process: 3 or more.
pub fn parse_fd(text: &str) -> Result<i32, Invalid> {
    match text.trim().parse::<i32>() {
        Ok(fd) if fd >= 3 => Ok(fd),
        _ => Err(Invalid(format!(
            "`{text}` is not an inherited socket's descriptor: give its number, 3 or more"
        ))),
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bind::Tcp(addr) => write!(f, "{addr}"),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
            Bind::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

impl TryFrom<String> for Bind {
    type Error = Invalid;

    fn try_from(text: String) -> Result<Bind, Invalid> {
        text.parse()
    }
}

impl From<Bind> for String {
    fn from(bind: Bind) -> String {
        bind.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_mistakes_are_named() {
        assert_eq!(
            "127.0.0.1:8080".parse::<Bind>().unwrap(),
            Bind::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            "[::1]:0".parse::<Bind>().unwrap(),
            Bind::Tcp("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/w.sock".parse::<Bind>().unwrap(),
            Bind::Unix("/run/w.sock".into())
        );
        assert_eq!("fd://3".parse::<Bind>().unwrap(), Bind::Fd(3));
        for bind in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "unix:/tmp/a b.sock",
            "fd://7",
        ] {
            assert_eq!(bind.parse::<Bind>().unwrap().to_string(), bind);
        }
        for bad in [
            "localhost",
            "8080",
            "unix:",
            "fd://2",
            "fd://x",
            "http://127.0.0.1:1",
        ] {
            let err = bad.parse::<Bind>().unwrap_err();
            assert!(
                err.0.contains(bad.trim_start_matches("fd://")),
                "{bad}: {err}"
            );
        }
    }
}
