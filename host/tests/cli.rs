//! The binary refuses what it cannot serve, at start-up, with a message that says
//! what is wrong and a non-zero exit. (Serving itself is tested in the workspace's
//! `tests` crate.)

// Tests may block; host/clippy.toml guards the loop thread.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn serve(component: &Path, extra: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmloop"))
        .args([
            "serve",
            "--listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0",
        ])
        .args(extra)
        .arg(component)
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    // Cargo's scratch directory for integration tests, inside target/: nothing is
    // left behind in the system's temporary directory.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wasmloop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_missing_file_is_named() {
    let (ok, err) = serve(Path::new("/nonexistent/handler.wasm"), &[]);
    assert!(!ok);
    assert!(
        err.contains("failed to read /nonexistent/handler.wasm"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_webassembly_is_refused() {
    let path = write_temp("text.wasm", b"hello, I am text");
    let (ok, err) = serve(&path, &[]);
    assert!(!ok);
    assert!(err.contains("not a WebAssembly file"), "{err}");
}

#[test]
fn a_core_module_is_refused_with_a_hint() {
    let path = write_temp("core.wasm", &wat::parse_str("(module)").unwrap());
    let (ok, err) = serve(&path, &[]);
    assert!(!ok);
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[test]
fn a_truncated_component_is_refused() {
    let bytes = wat::parse_str(r#"(component (core module (func (export "f"))))"#).unwrap();
    let path = write_temp("truncated.wasm", &bytes[..bytes.len() - 3]);
    let (ok, err) = serve(&path, &[]);
    assert!(!ok);
    assert!(err.contains("failed to validate or compile"), "{err}");
}

#[test]
fn a_component_without_a_handler_is_refused() {
    let bytes = wat::parse_str(
        r#"(component
            (core module $m (func (export "run")))
            (core instance $i (instantiate $m))
            (func $run (canon lift (core func $i "run")))
            (export "run" (func $run)))"#,
    )
    .unwrap();
    let path = write_temp("no-handler.wasm", &bytes);
    let (ok, err) = serve(&path, &[]);
    assert!(!ok);
    assert!(err.contains("no wasi:http handler export"), "{err}");
    assert!(
        err.contains("found run"),
        "the message lists what is exported: {err}"
    );
}

#[test]
fn unsupported_imports_are_named() {
    let bytes = wat::parse_str(
        r#"(component
            (import "acme:db/query@1.0.0" (instance (export "run" (func))))
            (import "acme:kv/store@2.0.0" (instance (export "get" (func))))
            (core module $m (func (export "handle")))
            (core instance $i (instantiate $m))
            (func $handle (canon lift (core func $i "handle")))
            (instance $h (export "handle" (func $handle)))
            (export "wasi:http/incoming-handler@0.2.12" (instance $h)))"#,
    )
    .unwrap();
    let path = write_temp("imports.wasm", &bytes);
    let (ok, err) = serve(&path, &[]);
    assert!(!ok);
    assert!(err.contains("unsupported imports"), "{err}");
    assert!(
        err.contains("`acme:db/query@1.0.0`") && err.contains("`acme:kv/store@2.0.0`"),
        "{err}"
    );
}

#[test]
fn contradictory_flags_are_refused_before_anything_binds() {
    let path = write_temp("unused.wasm", b"");
    let (ok, err) = serve(&path, &["--threads=0"]);
    assert!(!ok);
    assert!(err.contains("--threads must be at least 1"), "{err}");
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmloop"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--mode",
        "--threads",
        "--pool-queue",
        "--fuel",
        "--max-memory",
        "--timeout",
        "--max-body",
        "--timeout-keep-alive",
        "--limit-concurrency",
        "--graceful-timeout",
        "--workers",
        "--timeout-worker-healthcheck",
        "--max-requests",
        "--max-requests-jitter",
        "--allow-outbound",
        "--var",
        "--admin-listen",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    assert!(
        help.contains("WASMLOOP_THREADS") && help.contains("[default: 40]"),
        "{help}"
    );
}
