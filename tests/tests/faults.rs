//! Faults around the deploy path: a version that cannot start, a data directory that
//! is full or may not be written, a cached artifact that was corrupted. In each, the
//! deploy gets a clear error, nothing is left half-written, and what was serving keeps
//! serving. (Killed and hung workers are in supervisor.rs.)
//!
//! docs/reliability.md lists every case with its result.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::Method;
use wasmloop_tests::{Running, Server, guests, temp_dir};

/// A wasi:http 0.2 handler whose core module runs `start` when instantiated, before
/// any request: what a static initializer that fails looks like to the host.
fn component_whose_start_runs(start: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            (import "wasi:http/types@0.2.0" (instance $types
                (export "incoming-request" (type (sub resource)))
                (export "response-outparam" (type (sub resource)))))
            (alias export $types "incoming-request" (type $request))
            (alias export $types "response-outparam" (type $outparam))
            (core module $m
                (memory 1)
                (func $start {start})
                (start $start)
                (func (export "handle") (param i32 i32)))
            (core instance $i (instantiate $m))
            (func $handle (param "request" (own $request)) (param "response-out" (own $outparam))
                (canon lift (core func $i "handle")))
            (instance $handler (export "handle" (func $handle)))
            (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#
    ))
    .expect("the fixture is valid WAT")
}

fn write_fixture(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

async fn version_count(server: &Running, token: &str, app: &str) -> usize {
    let reply = server
        .api(
            Method::GET,
            &format!("/v1/apps/{app}/versions"),
            Some(token),
            "",
            "application/json",
        )
        .await;
    reply.json()["versions"].as_array().map_or(0, Vec::len)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A server with tenant `t` and its app `app` serving `/config/VERSION` = `v1`;
/// returns the tenant's token.
async fn serving_v1(server: &Running) -> String {
    let token = server.create_tenant("t", "{}").await;
    let reply = server
        .deploy(
            &token,
            "app",
            guests::SDK_SYNC,
            "route=/config&var=VERSION=v1",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    token
}

/// Deploys v2 and checks that storing it failed cleanly: 500 naming `cause` and no
/// path of the server's, nothing in `data`'s `tmp/`, `components/` as they were, no
/// version recorded, v1 still serving.
async fn assert_storing_v2_fails(server: &Running, token: &str, data: &Path, cause: &str) {
    let components = files_in(&data.join("components"));
    let reply = deploy_v2(server, token).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    let message = reply.json()["error"].as_str().unwrap_or("").to_string();
    assert!(message.contains(cause), "{message}");
    assert!(!message.contains('/'), "the server's paths leak: {message}");
    assert_eq!(files_in(&data.join("tmp")), Vec::<String>::new());
    assert_eq!(files_in(&data.join("components")), components);
    assert_eq!(version_count(server, token, "app").await, 1);
    assert_eq!(server.get("/config/VERSION").await.text(), "v1");
}

/// Deploys version 2 of "app": another component, another VERSION.
async fn deploy_v2(server: &Running, token: &str) -> wasmloop_tests::Reply {
    server
        .deploy(
            token,
            "app",
            guests::SDK_ASYNC,
            "route=/config&var=VERSION=v2",
        )
        .await
}

/// Deploys v2 again, which now succeeds and serves.
async fn assert_v2_deploys(server: &Running, token: &str) {
    let reply = deploy_v2(server, token).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(server.get("/config/VERSION").await.text(), "v2");
}

#[tokio::test]
async fn a_version_that_cannot_start_is_refused_and_the_old_one_keeps_serving() {
    let dir = temp_dir("start-trap");
    let fixtures = temp_dir("start-trap-fixtures");
    let server = Server::registry(&dir).arg("--fuel=100000000").start().await;
    let token = serving_v1(&server).await;
    for (name, start, cause) in [
        ("trap.wasm", "unreachable", "guest trapped"),
        ("spin.wasm", "(loop $l (br $l))", "guest ran out of fuel"),
        (
            "grow.wasm",
            "(drop (memory.grow (i32.const 65535)))",
            "guest hit its memory limit",
        ),
    ] {
        let wasm = write_fixture(&fixtures, name, &component_whose_start_runs(start));
        let reply = server
            .deploy(&token, "app", &wasm, "route=/config&var=VERSION=v2")
            .await;
        assert_eq!(reply.status, 422, "{name}: {}", reply.text());
        let message = reply.json()["error"].as_str().unwrap_or("").to_string();
        assert!(
            message.contains("fails while it is instantiated") && message.contains(cause),
            "{name}: {message}"
        );
        assert_eq!(server.get("/config/VERSION").await.text(), "v1", "{name}");
        assert_eq!(version_count(&server, &token, "app").await, 1, "{name}");
    }
    assert_eq!(files_in(&dir.join("tmp")), Vec::<String>::new());

    // `serve FILE` refuses it at start-up, with the same reason.
    let trap = write_fixture(
        &fixtures,
        "trap.wasm",
        &component_whose_start_runs("unreachable"),
    );
    let (status, output) = Server::new(&trap).start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains("cannot serve requests")
            && output.contains("fails while it is instantiated"),
        "{output}"
    );
}

/// Whether this machine lets the tests mount a small tmpfs in a private mount
/// namespace (it does for root, and for users with unprivileged user namespaces).
fn private_mounts_work() -> Result<(), String> {
    let output = Command::new("unshare")
        .args(["--mount", "--map-root-user", "--propagation", "private"])
        .args(["sh", "-c", "mount -t tmpfs -o size=1m tmpfs /tmp"])
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 << 10];
    while file.write_all(&block).is_ok() {}
    let mut byte = [0u8; 1];
    while file.write_all(&byte).is_ok() {
        byte[0] = 0;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_the_deploy_cleanly_and_serving_goes_on() {
    // A real full disk: the data directory is a 24 MiB tmpfs in the server's own
    // mount namespace. Mounting needs privileges that CI (root) has; a machine that
    // lacks them fails here with the reason rather than skipping silently.
    private_mounts_work().expect("this test needs `unshare --mount --map-root-user`");
    let dir = temp_dir("disk-full");
    let data = dir.display().to_string();
    let server = Server::registry(&dir)
        .wrapped_in(&[
            "unshare",
            "--mount",
            "--map-root-user",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount -t tmpfs -o size=24m tmpfs "$0" && exec "$@""#,
            &data,
        ])
        .start()
        .await;
    let token = serving_v1(&server).await;

    // The server's view of its data directory, which only its namespace mounts.
    let inside = PathBuf::from(format!("/proc/{}/root{}", server.pid(), data));
    let filler = inside.join("filler");
    fill(&filler);
    assert_storing_v2_fails(&server, &token, &inside, "No space left on device").await;

    // Space again: the same deploy goes through.
    std::fs::remove_file(&filler).unwrap();
    assert_v2_deploys(&server, &token).await;
    assert_eq!(server.host_panics(), Vec::<String>::new());
}

/// Makes directories immutable (`chattr +i`, which refuses new files even to root)
/// and mutable again when dropped, also when the test fails.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(dirs: Vec<PathBuf>) -> Immutable {
        for dir in &dirs {
            let status = Command::new("chattr").arg("+i").arg(dir).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "chattr +i {} failed: this test needs chattr and root",
                dir.display()
            );
        }
        Immutable(dirs)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(dir).status();
        }
    }
}

#[tokio::test]
async fn a_data_directory_that_cannot_be_written_refuses_the_deploy_cleanly() {
    // A read-only remount is refused while SQLite holds its database open for
    // writing, so the directories deploys write into are made immutable instead:
    // every new file in them fails, as on a read-only file system.
    let dir = temp_dir("read-only");
    let server = Server::registry(&dir).start().await;
    let token = serving_v1(&server).await;
    {
        let _frozen = Immutable::set(vec![
            dir.join("tmp"),
            dir.join("components"),
            dir.join("artifacts"),
        ]);
        assert_storing_v2_fails(&server, &token, &dir, "Operation not permitted").await;
    }
    assert_v2_deploys(&server, &token).await;
}

/// A worker maps an artifact without hashing it only when it is the very file the
/// master found intact. One changed in place after that (same inode, same size) is
/// hashed by the worker that loads it next and refused, and the master compiles it
/// again at its next publication.
#[tokio::test]
async fn an_artifact_changed_in_place_after_its_check_is_never_mapped() {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let dir = temp_dir("changed-artifact");
    let server = Server::registry(&dir).start().await;
    let token = serving_v1(&server).await;
    let artifacts = dir.join("artifacts");
    for name in files_in(&artifacts) {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(artifacts.join(&name))
            .unwrap();
        let middle = file.metadata().unwrap().len() / 2;
        file.seek(SeekFrom::Start(middle)).unwrap();
        file.write_all(&[0xa5; 64]).unwrap();
    }
    // A new worker loads the table the master published before the change.
    let old = server.worker_pids();
    server.signal_pid(old[0], "KILL");
    let replaced = std::time::Instant::now() + Duration::from_secs(15);
    while server.worker_pids().iter().any(|p| old.contains(p)) || server.worker_pids().is_empty() {
        assert!(std::time::Instant::now() < replaced, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server
            .wait_for_log(
                &["is corrupt (not the recorded hash)"],
                Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        server.log()
    );
    // The next publication (another app's deploy, other bytes) finds the change and
    // compiles the artifact again: the app serves on the new worker.
    let other = server
        .deploy(&token, "other", guests::SDK_ASYNC, "route=/other")
        .await;
    assert_eq!(other.status, 201, "{}", other.text());
    assert!(
        server.has_log(&["cached artifact is corrupt"]),
        "{}",
        server.log()
    );
    assert_eq!(server.get("/config/VERSION").await.text(), "v1");
}

#[tokio::test]
async fn a_corrupt_cached_artifact_is_detected_and_recompiled() {
    let dir = temp_dir("corrupt-artifact");
    let mut server = Server::registry(&dir).start().await;
    serving_v1(&server).await;
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).is_some());

    // Flip bytes in the middle of every cached artifact: still the right size, and
    // still deserializable-looking at its start, but not what was compiled.
    let artifacts = dir.join("artifacts");
    let names = files_in(&artifacts);
    assert!(!names.is_empty());
    for name in &names {
        let path = artifacts.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 64] {
            *b ^= 0xff;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    let server = Server::registry(&dir).start().await;
    assert_eq!(server.get("/config/VERSION").await.text(), "v1");
    assert!(
        server
            .wait_for_log(&["cached artifact is corrupt"], Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log()
    );
}
