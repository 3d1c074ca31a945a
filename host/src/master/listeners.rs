//! The public listeners the master binds once and every worker inherits: TCP
//! addresses, unix domain sockets (a stale socket file from a crash is replaced, and
//! the file is removed when the master stops) and sockets the master was started with
//! (`--fd`). Workers receive them as descriptors 3, 4, ... (systemd's `LISTEN_FDS`
//! convention), in the order the operator named them.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::ServeConfig;
use crate::model::listen::Bind;

/// One bound listener.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    /// How it is announced: `http://127.0.0.1:8080`, `unix:/run/w.sock`.
    shown: String,
    /// Its TCP address (none for a unix socket).
    pub tcp: Option<SocketAddr>,
    /// The socket file this master made, removed when it stops.
    made_file: Option<PathBuf>,
}

impl Listener {
    /// The address as announced in `listening on ...`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The socket, to pass to a worker.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.made_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds every listener of `config` (`--listen`, `--bind`, `--uds`, `--fd`).
pub fn bind_all(config: &ServeConfig) -> anyhow::Result<Vec<Listener>> {
    let scheme = if config.tls_files().is_some() {
        "https"
    } else {
        "http"
    };
    let backlog = i32::try_from(config.backlog).unwrap_or(i32::MAX);
    config
        .binds()
        .iter()
        .map(|(bind, flag)| {
            let (socket, made_file) = match bind {
                Bind::Tcp(addr) => (bind_tcp(*addr, flag, backlog)?, None),
                Bind::Unix(path) => (bind_unix(path, backlog)?, Some(path.clone())),
                Bind::Fd(fd) => (inherited(*fd, backlog)?, None),
            };
            let local = socket
                .local_addr()
                .with_context(|| format!("failed to read the address of {bind}"))?;
            let tcp = local.as_socket();
            let shown = match (tcp, local.as_pathname()) {
                (Some(addr), _) => format!("{scheme}://{addr}"),
                (None, Some(path)) => format!("unix:{}", path.display()),
                (None, None) => bind.to_string(),
            };
            Ok(Listener {
                socket,
                shown,
                tcp,
                made_file,
            })
        })
        .collect()
}

fn bind_tcp(addr: SocketAddr, flag: &str, backlog: i32) -> anyhow::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into()).map_err(|e| {
        anyhow::anyhow!(
            "failed to listen on {addr} ({flag}): {e}{}",
            in_use_hint(&e, flag)
        )
    })?;
    socket
        .listen(backlog)
        .with_context(|| format!("failed to listen on {addr}"))?;
    Ok(socket)
}

/// Binds a unix socket at `path`, replacing a socket file nobody listens on (left by
/// a crash) but never a live socket or another kind of file.
fn bind_unix(path: &Path, backlog: i32) -> anyhow::Result<Socket> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt as _;
            if !meta.file_type().is_socket() {
                bail!("failed to listen on unix:{shown}: the path exists and is not a socket");
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "failed to listen on unix:{shown}: another server listens there \
                     (another wasmloop?); stop it or give another path"
                ),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).with_context(|| {
                        format!("failed to remove the stale socket file {shown}")
                    })?;
                }
                Err(e) => bail!("failed to listen on unix:{shown}: {e}"),
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => bail!("failed to listen on unix:{shown}: {e}"),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    let addr = SockAddr::unix(path)
        .with_context(|| format!("unix:{shown} is not a usable socket path (too long?)"))?;
    socket
        .bind(&addr)
        .with_context(|| format!("failed to listen on unix:{shown}"))?;
    socket
        .listen(backlog)
        .with_context(|| format!("failed to listen on unix:{shown}"))?;
    Ok(socket)
}

/// The stream socket this process was started with as descriptor `fd`; made to
/// listen if it was only bound.
fn inherited(fd: i32, backlog: i32) -> anyhow::Result<Socket> {
    // Checked before the descriptor is owned: it must be open, and a socket.
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_err(|_| anyhow::anyhow!("--fd {fd}: this process has no descriptor {fd}"))?;
    if !target.to_string_lossy().starts_with("socket:") {
        bail!(
            "--fd {fd}: descriptor {fd} is {}, not a socket",
            target.display()
        );
    }
    let socket = Socket::from(take_descriptor(fd));
    if socket
        .r#type()
        .context("--fd: cannot read the socket's type")?
        != Type::STREAM
    {
        bail!("--fd {fd}: the socket is not a stream (TCP or unix) socket");
    }
    socket
        .listen(backlog)
        .with_context(|| format!("--fd {fd}: the socket cannot listen"))?;
    Ok(socket)
}

/// Owns descriptor `fd`, which the process was started with.
#[expect(
    unsafe_code,
    reason = "taking ownership of an inherited descriptor has no safe form"
)]
fn take_descriptor(fd: i32) -> OwnedFd {
    use std::os::fd::FromRawFd as _;
    // SAFETY: the caller checked that `fd` is open and a socket. It was handed to
    // this process by whoever started it (`--fd`) and nothing else in wasmloop uses
    // that number: it is taken once, at start, before any other descriptor is opened
    // under that number by this process's own code (the flag refuses 0-2).
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// What to do about an address another process holds, naming the flag.
pub fn in_use_hint(error: &std::io::Error, flag: &str) -> String {
    if error.kind() == ErrorKind::AddrInUse {
        format!(
            ". Another server (another wasmloop?) listens there: give {flag}=127.0.0.1:0 \
             for any free port (the bound address is printed), or another address"
        )
    } else {
        String::new()
    }
}
