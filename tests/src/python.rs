//! The Python SDK's test fixture: a virtual environment with the SDK installed from
//! guest-sdk-python/ (which pulls the pinned componentize-py from PyPI), and the test
//! apps of tests/python-sdk/ built with it, once per test binary.
//!
//! Without `python3`, or with PyPI out of reach, [`apps`] returns `None` and the test
//! says it was skipped, unless `WASMLOOP_REQUIRE_PYTHON=1` (which CI sets) makes that
//! a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root (guest-sdk-python/ and tests/python-sdk/ are read from it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// The built test apps.
pub struct PythonApps {
    /// The environment's interpreter, with the SDK (`python -m wasmloop build`).
    pub python: PathBuf,
    /// tests/python-sdk/sync: every handler a `def`.
    pub sync: String,
    /// tests/python-sdk/async: the same routes as `async def`.
    pub async_: String,
}

fn required() -> bool {
    std::env::var("WASMLOOP_REQUIRE_PYTHON").as_deref() == Ok("1")
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The environment under target/, made (or brought up to date) once.
fn environment(dir: &Path) -> Result<PathBuf, String> {
    let python = dir.join("bin").join("python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
    }
    // Installs from the source tree as a user would (`pip install guest-sdk-python`);
    // componentize-py comes from PyPI the first time only. setuptools builds in the
    // tree and never prunes its build/ directory: without this a module removed from
    // the SDK would still be installed.
    let sdk = root().join("guest-sdk-python");
    for stale in [sdk.join("build"), sdk.join("src").join("wasmloop.egg-info")] {
        let _ = std::fs::remove_dir_all(stale);
    }
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(&sdk))?;
    Ok(python)
}

/// `python -m wasmloop build` in `project`, into `output`.
pub fn build(python: &Path, project: &Path, output: &Path) -> Result<(), String> {
    run(Command::new(python)
        .args(["-m", "wasmloop", "build", "-o"])
        .arg(output)
        .current_dir(project))
}

/// Why there are no apps: the environment could not be made (no python3, no PyPI:
/// a skip), or the SDK failed to build them (a failure).
enum Failure {
    Environment(String),
    Build(String),
}

fn make() -> Result<PythonApps, Failure> {
    let target = PathBuf::from(crate::guests::TARGET_DIR).join("python-sdk");
    std::fs::create_dir_all(&target).map_err(|e| Failure::Environment(e.to_string()))?;
    let python = environment(&target.join("venv")).map_err(Failure::Environment)?;
    let apps = root().join("tests").join("python-sdk");
    let (sync, async_) = (target.join("sync.wasm"), target.join("async.wasm"));
    // The two builds take ~10 s each; they run side by side.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| build(&python, &apps.join("sync"), &sync));
        let b = s.spawn(|| build(&python, &apps.join("async"), &async_));
        (a.join(), b.join())
    });
    for built in [a, b] {
        built
            .map_err(|_| Failure::Build("a build thread panicked".into()))?
            .map_err(Failure::Build)?;
    }
    Ok(PythonApps {
        python,
        sync: sync.display().to_string(),
        async_: async_.display().to_string(),
    })
}

/// The apps, built on first use; `None` (skipped) without Python or PyPI.
pub fn apps() -> Option<&'static PythonApps> {
    static APPS: OnceLock<Result<PythonApps, Failure>> = OnceLock::new();
    match APPS.get_or_init(make) {
        Ok(apps) => Some(apps),
        Err(Failure::Build(e)) => panic!("the Python test apps did not build: {e}"),
        Err(Failure::Environment(e)) => {
            assert!(
                !required(),
                "WASMLOOP_REQUIRE_PYTHON=1 but the Python SDK's environment could not be made: {e}"
            );
            eprintln!("SKIPPED: the Python SDK's environment could not be made: {e}");
            None
        }
    }
}
