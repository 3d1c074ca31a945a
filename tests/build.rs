//! Builds the guest fixtures (tests/guests/) and the examples (examples/) for
//! wasm32-wasip2, once per test build, and writes their paths into `guests.rs` as
//! constants. Nothing built here is committed.

use std::path::{Path, PathBuf};
use std::process::Command;

const WORKSPACES: &[(&str, &[&str])] = &[
    (
        "guests",
        &[
            "sync_guest",
            "async_guest",
            "wstd_guest",
            "relaxed_simd_guest",
        ],
    ),
    ("sdk-guests", &["sdk_sync", "sdk_async"]),
    (
        "../examples",
        &[
            "hello",
            "hello_async",
            "json_api",
            "fetch_proxy",
            "cpu_bound",
            "sleepy",
        ],
    ),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../target"))
        .join("wasm-guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    check_target_installed();

    // The SDK is a path dependency of the wasm workspaces: edits to it rebuild them.
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../guest-sdk").display()
    );
    let mut constants = String::new();
    for (dir, artifacts) in WORKSPACES {
        let workspace = manifest_dir.join(dir);
        println!("cargo:rerun-if-changed={}", workspace.display());
        let status = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(workspace.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            // Flags meant for the host build must not leak into the wasm build.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            // Nor clippy's wrapper, when this runs under `cargo clippy`: CI lints the
            // wasm workspaces on their own.
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CLIPPY_ARGS")
            .status()
            .expect("failed to run cargo for the wasm guests");
        assert!(
            status.success(),
            "building the guests in {} failed",
            workspace.display()
        );
        for artifact in *artifacts {
            let wasm = target_dir
                .join("wasm32-wasip2/release")
                .join(format!("{artifact}.wasm"));
            assert!(wasm.exists(), "{} was not built", wasm.display());
            constants.push_str(&format!(
                "/// Built from source by build.rs.\npub const {}: &str = {:?};\n",
                artifact.to_uppercase(),
                wasm.display().to_string()
            ));
        }
    }
    // The harness refuses a wasmloop binary older than its sources: `cargo test -p
    // wasmloop-tests` alone does not rebuild it (`cargo test --workspace` does).
    let host_src = manifest_dir.join("../host/src");
    println!("cargo:rerun-if-changed={}", host_src.display());
    println!(
        "cargo:rustc-env=WASMLOOP_HOST_SOURCES_MTIME={}",
        newest_mtime(&host_src)
    );

    constants.push_str(&format!(
        "/// The target directory the guests were built in.\npub const TARGET_DIR: &str = {:?};\n",
        target_dir.display().to_string()
    ));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, constants).unwrap();
}

/// Fails early, with the command that fixes it, when the wasm target is missing.
fn check_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match libdir {
        Some(dir) if Path::new(&dir).exists() => {}
        _ => panic!(
            "the wasm32-wasip2 target is not installed; run `rustup target add wasm32-wasip2`"
        ),
    }
}

/// Seconds since the epoch of the newest file under `dir`.
fn newest_mtime(dir: &Path) -> u64 {
    let mut newest = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let mtime = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        };
        newest = newest.max(mtime);
    }
    newest
}
