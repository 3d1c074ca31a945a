//! `wasmloop new` writes a crate that builds as it is, and the handler it builds is
//! served in the mode its style promises.

use std::path::Path;
use std::process::Command;

use wasmloop_tests::{Server, binary, guests};

/// Runs `wasmloop new` with `args` in `dir`.
fn wasmloop_new(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("new")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("failed to run wasmloop new")
}

#[tokio::test]
async fn new_crates_build_and_serve_in_both_styles() {
    let root = Path::new(guests::TARGET_DIR).join("templates");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    for (name, flags, mode) in [
        ("fresh-sync", &[][..], "mode=pool"),
        ("fresh-async", &["--async"][..], "mode=loop"),
    ] {
        let out = wasmloop_new(&root, &[&[name][..], flags].concat());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wasm_name = name.replace('-', "_");
        assert!(
            stdout.contains(&format!("target/wasm32-wasip2/release/{wasm_name}.wasm")),
            "{stdout}"
        );

        // Built the way the printed instructions say, sharing the guests' target dir
        // so the SDK's dependencies are compiled once.
        let crate_dir = root.join(name);
        let status = Command::new(&cargo)
            .args(["build", "--release", "--target-dir"])
            .arg(guests::TARGET_DIR)
            .current_dir(&crate_dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .unwrap();
        assert!(status.success(), "the new crate {name} does not build");

        let wasm =
            Path::new(guests::TARGET_DIR).join(format!("wasm32-wasip2/release/{wasm_name}.wasm"));
        let server = Server::new(wasm.to_str().unwrap()).start().await;
        assert!(server.has_log(&[mode]), "{name}: {}", server.log());
        assert_eq!(
            server.get("/").await.text(),
            format!("Hello from {name}!\n")
        );
        let reply = server.get("/hello/wasm").await;
        assert_eq!(reply.text(), r#"{"greeting":"Hello, wasm!"}"#);
    }

    // A second `new` with the same name refuses instead of overwriting.
    let out = wasmloop_new(&root, &["fresh-sync"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // And a name Cargo would refuse is refused before anything is written.
    let out = wasmloop_new(&root, &["9 lives"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a crate name"));
    assert!(!root.join("9 lives").exists());
}
