//! The layout's rules, checked: which part of host/src may name which other part.
//! docs/architecture.md explains each rule; this test reads every `crate::`, `super::`
//! and `self::` path in the code (comments and strings left out) and fails, naming
//! the file and line, when a path crosses a forbidden arrow or when the parts import
//! each other in a cycle.

// Tests may block; host/clippy.toml guards the loop thread.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A part of the crate: a top-level folder or file (`worker`, `model`, `config`...).
type Part = String;

/// One rule: files of `from` never name anything in `to`.
struct Forbidden {
    from: &'static str,
    to: &'static [&'static str],
    why: &'static str,
}

const FORBIDDEN: &[Forbidden] = &[
    Forbidden {
        from: "model",
        to: &[
            "cli",
            "command",
            "config",
            "deploy",
            "doctor",
            "master",
            "metrics",
            "protocol",
            "registry",
            "runtime",
            "telemetry",
            "worker",
        ],
        why: "model/ is what every part shares and imports nothing else of the crate",
    },
    Forbidden {
        from: "runtime",
        to: &[
            "cli", "command", "config", "deploy", "master", "registry", "worker",
        ],
        why: "runtime/ is Wasmtime only; the processes around it hand it what it needs",
    },
    Forbidden {
        from: "worker",
        to: &["cli", "command", "deploy", "master", "registry"],
        why: "a worker knows the master only through protocol.rs",
    },
    Forbidden {
        from: "master",
        to: &["worker", "cli", "command"],
        why: "the master talks to workers through protocol.rs",
    },
    Forbidden {
        from: "deploy",
        to: &["master", "worker", "cli", "command"],
        why: "the control plane is handed a sender for tables; it knows neither process",
    },
    Forbidden {
        from: "registry",
        to: &["deploy", "master", "worker", "cli", "command"],
        why: "the registry reports through callbacks and channels, not into its users",
    },
    Forbidden {
        from: "cli",
        to: &[
            "command",
            "deploy",
            "master",
            "metrics",
            "registry",
            "runtime",
            "telemetry",
            "worker",
        ],
        why: "the CLI uses only model/, config.rs, doctor.rs, protocol.rs and tls.rs",
    },
    Forbidden {
        from: "protocol",
        to: &[
            "cli", "command", "config", "deploy", "master", "registry", "runtime", "worker",
        ],
        why: "the protocol is data both processes share",
    },
    Forbidden {
        from: "metrics",
        to: &[
            "cli", "command", "config", "deploy", "doctor", "master", "protocol", "registry",
            "runtime", "worker",
        ],
        why: "metrics are counted by the runtime and the worker, and read by the master",
    },
    Forbidden {
        from: "doctor",
        to: &[
            "cli", "command", "config", "deploy", "master", "protocol", "registry", "runtime",
            "worker",
        ],
        why: "the doctor is pure rules over metrics",
    },
    Forbidden {
        from: "tls",
        to: &[
            "cli",
            "command",
            "config",
            "deploy",
            "doctor",
            "master",
            "metrics",
            "model",
            "protocol",
            "registry",
            "runtime",
            "telemetry",
            "worker",
        ],
        why: "tls.rs reads certificates for whoever serves or calls; it knows no one",
    },
    Forbidden {
        from: "config",
        to: &[
            "cli",
            "command",
            "deploy",
            "doctor",
            "master",
            "metrics",
            "protocol",
            "registry",
            "runtime",
            "telemetry",
            "worker",
        ],
        why: "config.rs imports model/ only",
    },
];

/// A path that names another module: where it is, and the module path it names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    line: usize,
    target: Vec<String>,
}

/// The module path of a file under src/: `worker/run/mod.rs` is `[worker, run]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a source file with comments and string literals blanked, line
/// numbers kept.
fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut block_depth = 0;
    while let Some(c) = chars.next() {
        if block_depth > 0 {
            if c == '*' && chars.peek() == Some(&'/') {
                chars.next();
                block_depth -= 1;
            } else if c == '/' && chars.peek() == Some(&'*') {
                chars.next();
                block_depth += 1;
            }
            out.push(if c == '\n' { '\n' } else { ' ' });
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                block_depth = 1;
                out.push(' ');
            }
            '"' => {
                out.push(' ');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every module path the code of a file at `module` names, resolved to a path from
/// the crate root: `crate::a::b`, `super::x`, `self::y`, and each branch of a
/// `use crate::{a::b, c}` group.
fn references(module: &[String], source: &str) -> Vec<Reference> {
    // Unit tests at the end of a file (`mod tests { use super::*; }`) are the file's
    // own business.
    let source = source
        .split("\n#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let code = code_only(source);
    let mut found = Vec::new();
    for (index, line) in code.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut at = 0;
        while at < line.len() {
            let rest = &line[at..];
            let Some(start) = ["crate::", "super::", "self::"]
                .iter()
                .filter_map(|p| rest.find(p).map(|i| (i, *p)))
                .min()
            else {
                break;
            };
            let (offset, prefix) = start;
            let begin = at + offset;
            // Part of a longer name (`my_crate::`, `$crate::`)?
            if begin > 0
                && (bytes[begin - 1].is_ascii_alphanumeric()
                    || bytes[begin - 1] == b'_'
                    || bytes[begin - 1] == b'$')
            {
                at = begin + prefix.len();
                continue;
            }
            let mut base: Vec<String> = match prefix {
                "crate::" => Vec::new(),
                _ => {
                    // `self` is the file's own module (the folder, for a mod.rs);
                    // `super` goes one up from there.
                    let mut here = module.to_vec();
                    if prefix == "super::" {
                        here.pop();
                    }
                    here
                }
            };
            let mut end = begin + prefix.len();
            // More `super::` steps.
            while line[end..].starts_with("super::") {
                base.pop();
                end += "super::".len();
            }
            let tail = &line[end..];
            for path in expand(tail) {
                let mut target = base.clone();
                target.extend(path);
                found.push(Reference {
                    line: index + 1,
                    target,
                });
            }
            at = end;
        }
    }
    found
}

/// The paths a `use` tail names: `a::b::C` is `[a, b, C]`; `{a::b, c}` each branch.
fn expand(tail: &str) -> Vec<Vec<String>> {
    let ident_end = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut path = Vec::new();
    let mut rest = tail;
    loop {
        if let Some(inner) = rest.strip_prefix('{') {
            // Only the names up to the first nested group or the end: enough to find
            // which module each branch names.
            let close = inner.find('}').unwrap_or(inner.len());
            let mut out = Vec::new();
            for branch in inner[..close].split(',') {
                let branch = branch.trim();
                if branch.is_empty() || branch == "self" {
                    out.push(path.clone());
                    continue;
                }
                for more in expand(branch) {
                    let mut full = path.clone();
                    full.extend(more);
                    out.push(full);
                }
            }
            return out;
        }
        let end = ident_end(rest);
        // A macro (`crate::error!`) is exported at the root, whatever its name.
        if end == 0 || rest[end..].starts_with('!') {
            break;
        }
        path.push(rest[..end].to_string());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    vec![path]
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("host/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The violations of the rules in a set of `(file, module, source)`.
fn check(files: &[(String, Vec<String>, String)]) -> Vec<String> {
    let parts: BTreeSet<Part> = files
        .iter()
        .filter_map(|(_, module, _)| module.first().cloned())
        .collect();
    let mut problems = Vec::new();
    let mut part_edges: BTreeMap<Part, BTreeMap<Part, String>> = BTreeMap::new();
    let mut file_edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> = BTreeMap::new();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(_, m, _)| m.clone()).collect();
    for (file, module, source) in files {
        let Some(from) = module.first() else {
            continue;
        };
        for reference in references(module, source) {
            let Some(to) = reference.target.first() else {
                continue;
            };
            if !parts.contains(to) {
                continue;
            }
            let place = format!("{file}:{}", reference.line);
            if let Some(rule) = FORBIDDEN
                .iter()
                .find(|r| r.from == from && r.to.contains(&to.as_str()))
            {
                problems.push(format!(
                    "{place}: {from} names crate::{} ({})",
                    reference.target.join("::"),
                    rule.why
                ));
            }
            if to != from {
                part_edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_insert(place.clone());
            }
            // The file the reference lands in: the longest module prefix that is a
            // file. A module naming its own children is a declaration, not an arrow
            // back up.
            let target_module = (1..=reference.target.len())
                .rev()
                .map(|n| reference.target[..n].to_vec())
                .find(|m| modules.contains(m));
            if let Some(target_module) = target_module
                && &target_module != module
                && !target_module.starts_with(module)
            {
                file_edges
                    .entry(module.clone())
                    .or_default()
                    .entry(target_module)
                    .or_insert(place);
            }
        }
    }
    if let Some(cycle) = find_cycle(&part_edges) {
        problems.push(format!("the parts import each other in a cycle: {cycle}"));
    }
    if let Some(cycle) = find_cycle(&file_edges) {
        problems.push(format!("files import each other in a cycle: {cycle}"));
    }
    problems
}

/// A cycle in a graph, described by the places of its arrows, if there is one.
fn find_cycle<N: Ord + Clone + std::fmt::Debug>(
    edges: &BTreeMap<N, BTreeMap<N, String>>,
) -> Option<String> {
    fn visit<N: Ord + Clone + std::fmt::Debug>(
        node: &N,
        edges: &BTreeMap<N, BTreeMap<N, String>>,
        done: &mut BTreeSet<N>,
        stack: &mut Vec<(N, String)>,
    ) -> Option<String> {
        if done.contains(node) {
            return None;
        }
        if let Some(start) = stack.iter().position(|(n, _)| n == node) {
            let steps: Vec<String> = stack[start..]
                .iter()
                .map(|(n, place)| format!("{n:?} ({place})"))
                .collect();
            return Some(steps.join(" -> "));
        }
        for (next, place) in edges.get(node).into_iter().flatten() {
            stack.push((node.clone(), place.clone()));
            if let Some(cycle) = visit(next, edges, done, stack) {
                return Some(cycle);
            }
            stack.pop();
        }
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}

fn load(src: &Path) -> Vec<(String, Vec<String>, String)> {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(src).expect("under src").to_path_buf();
            let source = std::fs::read_to_string(&path).expect("a readable source file");
            (
                format!("host/src/{}", relative.display()),
                module_path(&relative),
                source,
            )
        })
        .collect()
}

#[test]
fn no_forbidden_arrow_and_no_cycle_in_host_src() {
    let files = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(files.len() > 20, "host/src was not found");
    let problems = check(&files);
    assert!(
        problems.is_empty(),
        "the layout's rules (docs/architecture.md) are broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_guest_sdk_has_no_import_cycle() {
    let files = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/src"));
    assert!(files.len() > 3, "guest-sdk/src was not found");
    let problems: Vec<_> = check(&files)
        .into_iter()
        .map(|p| p.replace("host/src/", "guest-sdk/src/"))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself: a forbidden arrow, in each form a path can take, is found and
/// named; comments and strings are not code; a cycle is found.
#[test]
fn the_checker_finds_what_it_must() {
    let file = |name: &str, source: &str| {
        let relative = PathBuf::from(name);
        (name.to_string(), module_path(&relative), source.to_string())
    };
    let base = vec![
        file("model/mod.rs", "pub mod route;\n"),
        file("model/route.rs", "pub struct Route;\n"),
        file("master/mod.rs", "pub struct Master;\n"),
        file("deploy/mod.rs", "pub struct Api;\n"),
        file("protocol.rs", "use crate::model::route::Route;\n"),
    ];
    let with = |extra: (String, Vec<String>, String)| {
        let mut files = base.clone();
        files.push(extra);
        check(&files)
    };
    assert!(check(&base).is_empty(), "{:?}", check(&base));
    for source in [
        "use crate::master::Master;\n",
        "use crate::{model::route::Route, master::Master};\n",
        "fn f() { let _ = crate::master::Master; }\n",
        "use super::super::master::Master;\n",
    ] {
        let problems = with(file("worker/run/mod.rs", source));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("worker/run/mod.rs:1: worker names crate::master")),
            "{source:?}: {problems:?}"
        );
    }
    for source in [
        "// use crate::master::Master;\n",
        "/* crate::master::Master */\n",
        "const S: &str = \"crate::master::Master\";\n",
        "use crate::protocol::Report;\n",
        "fn f() { crate::master!(); }\n",
    ] {
        let problems = with(file("worker/mod.rs", source));
        assert!(problems.is_empty(), "{source:?}: {problems:?}");
    }
    let problems = with(file("deploy/api.rs", "use crate::master::Master;\n"));
    assert!(
        problems[0].contains("deploy names crate::master::Master"),
        "{problems:?}"
    );
    let mut cyclic = base.clone();
    cyclic.push(file("cli/mod.rs", "use crate::doctor::Report;\n"));
    cyclic.push(file("doctor.rs", "use crate::cli::Thing;\n"));
    let problems = check(&cyclic);
    assert!(problems.iter().any(|p| p.contains("cycle")), "{problems:?}");
}
