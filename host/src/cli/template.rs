//! `wasmloop new`: writes a handler project that builds as it is. In Rust (the
//! default) a crate that depends on `wasmloop-sdk`, targets `wasm32-wasip2` through
//! `.cargo/config.toml`, and is its own Cargo workspace so that it builds wherever it
//! is created; in Python (`--lang python`) an `app.py` for the `wasmloop` package
//! (guest-sdk-python/), built with `python -m wasmloop build`. The handler sources
//! are `host/templates/{sync,async}.{rs,py}`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Arguments of `wasmloop new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The crate's name; also the directory created for it.
    pub name: String,
    /// Write an `async fn` / `async def` handler (runs on the event loop) instead of
    /// a plain `fn` / `def` (runs on the thread pool).
    #[arg(long = "async")]
    pub is_async: bool,
    /// The language of the handler.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Directory to create the crate in (default: the current directory).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Use the SDK at this path (a checkout's `guest-sdk`, or `guest-sdk-python` with
    /// `--lang python`) instead of the release of the SDK that matches this binary.
    /// The path is written as given, made absolute.
    #[arg(long, env = "WASMLOOP_SDK_PATH")]
    pub sdk_path: Option<PathBuf>,
}

/// The languages `wasmloop new` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A crate using `wasmloop-sdk` (guest-sdk/).
    Rust,
    /// An `app.py` using the `wasmloop` package (guest-sdk-python/).
    Python,
}

/// `wasmloop new`: writes the project and says how to build and serve it.
pub fn run(args: &NewArgs) -> anyhow::Result<()> {
    let template = Template {
        name: args.name.clone(),
        is_async: args.is_async,
        lang: args.lang,
        sdk: SdkSource::find(args.sdk_path.as_deref(), args.lang)?,
    };
    let dir = args.dir.join(&args.name);
    template.write(&dir)?;
    if args.lang == Lang::Python {
        let style = if args.is_async {
            "async def handlers: they run on the event loop"
        } else {
            "def handlers: they run on the thread pool"
        };
        println!("Created {} ({style}).", dir.display());
        println!();
        println!("    cd {}", dir.display());
        for line in template.python_setup() {
            println!("    {line}");
        }
        println!("    .venv/bin/python -m wasmloop build");
        println!("    wasmloop serve --reuse serial app.wasm");
        return Ok(());
    }
    let style = if args.is_async {
        "an async fn handler: it runs on the event loop"
    } else {
        "a plain fn handler: it runs on the thread pool"
    };
    println!("Created {} ({style}).", dir.display());
    match &template.sdk {
        SdkSource::Path(path) => println!("It uses the SDK at {}.", path.display()),
        SdkSource::Version(version) => println!(
            "It depends on wasmloop-sdk {version} from the registry; to build against a \
             checkout of the SDK instead, give --sdk-path PATH/TO/wasmloop/guest-sdk."
        ),
    }
    println!();
    println!("    cd {}", dir.display());
    println!("    cargo build --release");
    println!(
        "    wasmloop serve target/wasm32-wasip2/release/{}.wasm",
        template.wasm_name()
    );
    Ok(())
}

/// Where the crate's `wasmloop-sdk` dependency comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A local checkout of the SDK.
    Path(PathBuf),
    /// A version from the registry.
    Version(String),
}

impl SdkSource {
    /// `--sdk-path` if given; else the registry release of this binary's version. (Never
    /// the sources this binary was built from: a path into one machine's checkout
    /// builds nowhere else.)
    pub fn find(explicit: Option<&Path>, lang: Lang) -> anyhow::Result<SdkSource> {
        if let Some(path) = explicit {
            let path = path
                .canonicalize()
                .with_context(|| format!("failed to find the SDK at {}", path.display()))?;
            let (marker, what) = match lang {
                Lang::Rust => ("Cargo.toml", "the wasmloop-sdk crate"),
                Lang::Python => ("pyproject.toml", "the wasmloop Python package"),
            };
            if !path.join(marker).is_file() {
                bail!("{} is not {what} (no {marker})", path.display());
            }
            return Ok(SdkSource::Path(path));
        }
        Ok(SdkSource::Version(env!("CARGO_PKG_VERSION").to_string()))
    }

    fn dependency(&self) -> String {
        match self {
            SdkSource::Path(path) => format!("{{ path = {:?} }}", path.display().to_string()),
            SdkSource::Version(version) => format!("{version:?}"),
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct Template {
    /// The crate's name (and directory).
    pub name: String,
    /// An `async fn` handler (the loop) instead of a plain `fn` (the pool).
    pub is_async: bool,
    /// The handler's language.
    pub lang: Lang,
    /// Where `wasmloop-sdk` comes from.
    pub sdk: SdkSource,
}

impl Template {
    /// Writes the crate into `dir`, which must not exist yet. Returns the files written.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        check_name(&self.name)?;
        if dir.exists() {
            bail!(
                "{} already exists; pick another name or remove it",
                dir.display()
            );
        }
        let files = self.files();
        let mut written = Vec::new();
        for (relative, contents) in &files {
            let path = dir.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("failed to create {}", parent.display()))?;
            }
            #[expect(clippy::disallowed_methods, reason = "a CLI command, not the loop")]
            std::fs::write(&path, contents)
                .with_context(|| format!("failed to write {}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }

    /// The name of the `.wasm` file `cargo build` makes.
    pub fn wasm_name(&self) -> String {
        self.name.replace('-', "_")
    }

    /// The commands that make the Python project's environment.
    pub fn python_setup(&self) -> Vec<String> {
        let package = match &self.sdk {
            SdkSource::Path(path) => format!("{:?}", path.display().to_string()),
            SdkSource::Version(version) => format!("\"wasmloop=={version}\""),
        };
        vec![
            "python3 -m venv .venv".to_string(),
            format!(".venv/bin/pip install {package}   # the SDK and componentize-py"),
        ]
    }

    fn python_files(&self) -> Vec<(&'static str, String)> {
        let source = if self.is_async {
            include_str!("../../templates/async.py")
        } else {
            include_str!("../../templates/sync.py")
        };
        let style = if self.is_async {
            "`async def` handlers: wasmloop runs them on its event loop"
        } else {
            "plain `def` handlers: wasmloop runs them on its thread pool"
        };
        let readme = format!(
            "# {name}

A wasmloop app with {style}.

```sh
{setup}
.venv/bin/python -m wasmloop build          # writes app.wasm
wasmloop serve --reuse serial app.wasm      # CPython starts once per instance
curl http://127.0.0.1:8080/hello/world
```

Pure-Python dependencies go in requirements.txt; the build bundles them. Native
extensions (numpy, pydantic-core) cannot run in a component.
",
            name = self.name,
            setup = self.python_setup().join("\n"),
        );
        vec![
            ("app.py", source.replace("{{name}}", &self.name)),
            (
                "requirements.txt",
                "# Pure-Python packages the app imports; `python -m wasmloop build` bundles them.\n"
                    .to_string(),
            ),
            (".gitignore", "/.venv\n__pycache__/\n*.wasm\n".to_string()),
            ("README.md", readme),
        ]
    }

    fn files(&self) -> Vec<(&'static str, String)> {
        if self.lang == Lang::Python {
            return self.python_files();
        }
        let source = if self.is_async {
            include_str!("../../templates/async.rs")
        } else {
            include_str!("../../templates/sync.rs")
        };
        let source = source
            .replace("{{name}}", &self.name)
            .replace("{{wasm}}", &self.wasm_name());
        let style = if self.is_async {
            "an `async fn` handler: wasmloop runs it on its event loop"
        } else {
            "a plain `fn` handler: wasmloop runs it on its thread pool"
        };
        let manifest = format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wasmloop-sdk = {sdk}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = "s"
strip = true

# A workspace of its own, so the crate builds wherever it was created.
[workspace]
"#,
            name = self.name,
            sdk = self.sdk.dependency(),
        );
        let readme = format!(
            "# {name}\n\n{style}.\n\n```sh\nrustup target add wasm32-wasip2   # once\ncargo build --release\nwasmloop serve target/wasm32-wasip2/release/{wasm}.wasm\ncurl http://127.0.0.1:8080/hello/world\n```\n",
            name = self.name,
            wasm = self.wasm_name(),
        );
        vec![
            ("Cargo.toml", manifest),
            (
                ".cargo/config.toml",
                "# Handlers are WebAssembly components.\n[build]\ntarget = \"wasm32-wasip2\"\n"
                    .to_string(),
            ),
            (".gitignore", "/target\n".to_string()),
            ("README.md", readme),
            ("src/lib.rs", source),
        ]
    }
}

/// Cargo's rules for a package name, checked here so the mistake is named before any
/// file is written.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !first_ok || !rest_ok || name.len() > 64 {
        bail!("{name:?} is not a crate name: use a letter, then letters, digits, `-` or `_`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cargo_would_refuse_are_refused() {
        for bad in ["", "1abc", "my app", "a/b", "../x", "-x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["hello", "my-app", "my_app2"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_templates_fill_in_the_name_and_the_sdk() {
        let template = Template {
            name: "my-app".into(),
            is_async: true,
            lang: Lang::Rust,
            sdk: SdkSource::Version("0.1.0".into()),
        };
        let files = template.files();
        let manifest = &files[0].1;
        assert!(manifest.contains("name = \"my-app\""), "{manifest}");
        assert!(manifest.contains("wasmloop-sdk = \"0.1.0\""), "{manifest}");
        let source = &files.last().unwrap().1;
        assert!(source.contains("async fn handle"));
        assert!(source.contains("release/my_app.wasm"));
        assert!(!source.contains("{{"));
    }

    #[test]
    fn the_python_template_names_its_style_and_the_package() {
        for is_async in [false, true] {
            let template = Template {
                name: "py-app".into(),
                is_async,
                lang: Lang::Python,
                sdk: SdkSource::Version("0.1.0".into()),
            };
            let files = template.files();
            let app = &files[0].1;
            assert_eq!(app.contains("async def hello"), is_async, "{app}");
            assert!(app.contains("getLogger(\"py-app\")"), "{app}");
            let readme = &files.last().unwrap().1;
            assert!(
                readme.contains("pip install \"wasmloop==0.1.0\""),
                "{readme}"
            );
        }
    }
}
