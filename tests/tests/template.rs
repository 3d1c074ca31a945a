//! `wasmloop new` writes a crate that builds as it is, anywhere (the SDK comes from
//! the registry, or from a checkout given with `--sdk-path`, never from a path into
//! the sources the binary was built from), and the handler it builds is served in the
//! mode its style promises.

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
    // A directory outside the repository: the crate must not lean on its location.
    let root = std::env::temp_dir().join(format!("wasmloop-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    let sdk_path = sdk.to_str().unwrap();

    // By default the crate depends on the SDK release of the binary's version, and on
    // no path at all.
    let out = wasmloop_new(&root, &["from-registry"]);
    assert!(out.status.success(), "{out:?}");
    let manifest = std::fs::read_to_string(root.join("from-registry/Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!("wasmloop-sdk = \"{}\"", env!("CARGO_PKG_VERSION"))),
        "{manifest}"
    );
    assert!(!manifest.contains("path"), "{manifest}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--sdk-path"));

    for (name, flags, mode) in [
        ("fresh-sync", &[][..], "mode=pool"),
        ("fresh-async", &["--async"][..], "mode=loop"),
    ] {
        let out = wasmloop_new(
            &root,
            &[&[name, "--sdk-path", sdk_path][..], flags].concat(),
        );
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
    // An --sdk-path that is not the SDK is refused.
    let out = wasmloop_new(&root, &["lost", "--sdk-path", "/nonexistent/guest-sdk"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to find the SDK"));
    let _ = std::fs::remove_dir_all(&root);
}
