//! The dependency invariant of ARCHITECTURE.md, checked on what cargo resolves:
//! `runner -> protocol <- supervisor`. `hero-protocol` depends on no crate of ours;
//! `hero-runner` (the SDK) on `hero-protocol` only, and on no script engine or
//! command-line parser; `hero-supervisor` not on `hero-runner`, and on the binary's crates
//! (clap, the built-in runner, the log subscriber) only optionally, with no library
//! module using them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `hero-supervisor`'s dependencies that only its binary (feature `cli`) may have.
const SUPERVISOR_BINARY_ONLY: [&str; 3] = ["clap", "hero-script-runner", "tracing-subscriber"];
/// What the runner SDK must not make its users compile.
const NOT_IN_THE_SDK: [&str; 5] = ["rhai", "clap", "toml", "tempfile", "tracing-subscriber"];
/// What a library module of `hero-supervisor` must not say.
const NOT_IN_THE_SUPERVISOR_LIBRARY: [&str; 3] = ["clap::", "hero_script_runner", "use clap"];
/// clap's derives, not allowed in a library module's `#[derive(..)]` either.
const CLAP_DERIVES: [&str; 4] = ["Parser", "Args", "Subcommand", "ValueEnum"];

/// What `line` says of the binary's crates: the needles it contains, and a clap derive.
fn binary_crates_in(line: &str) -> Vec<String> {
    let mut found: Vec<String> = NOT_IN_THE_SUPERVISOR_LIBRARY
        .iter()
        .filter(|needle| line.contains(*needle))
        .map(|needle| needle.to_string())
        .collect();
    if let Some(derives) = line.trim().strip_prefix("#[derive(") {
        for name in derives.trim_end_matches(")]").split(',').map(str::trim) {
            if CLAP_DERIVES.contains(&name) {
                found.push(format!("#[derive({name})]"));
            }
        }
    }
    found
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// `cargo metadata --no-deps` of the workspace.
fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(workspace_root().join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints json")
}

/// One dependency of a package, of any kind (normal, dev, build).
#[derive(Debug)]
struct Dep {
    name: String,
    kind: String,
    optional: bool,
}

fn deps(metadata: &Value, package: &str) -> Vec<Dep> {
    let packages = metadata["packages"].as_array().expect("packages");
    let found = packages
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package} in the workspace"));
    found["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| Dep {
            name: d["name"].as_str().expect("name").to_owned(),
            kind: d["kind"].as_str().unwrap_or("normal").to_owned(),
            optional: d["optional"].as_bool().unwrap_or(false),
        })
        .collect()
}

fn workspace_packages(metadata: &Value) -> BTreeSet<String> {
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn the_crate_graph_is_the_documented_one() {
    let metadata = metadata();
    let ours = workspace_packages(&metadata);
    for name in [
        "hero-protocol",
        "hero-runner",
        "hero-script-runner",
        "hero-supervisor",
    ] {
        assert!(ours.contains(name), "{name} is a workspace member");
    }

    let protocol: Vec<_> = deps(&metadata, "hero-protocol")
        .into_iter()
        .filter(|d| ours.contains(&d.name))
        .collect();
    assert!(protocol.is_empty(), "hero-protocol depends on {protocol:?}");

    let runner = deps(&metadata, "hero-runner");
    let runner_ours: Vec<_> = runner
        .iter()
        .filter(|d| ours.contains(&d.name))
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(runner_ours, ["hero-protocol"], "the SDK's crates of ours");
    for d in &runner {
        assert!(
            !NOT_IN_THE_SDK.contains(&d.name.as_str()),
            "the runner SDK depends on {} ({})",
            d.name,
            d.kind
        );
    }

    let supervisor = deps(&metadata, "hero-supervisor");
    for d in &supervisor {
        assert_ne!(d.name, "hero-runner", "hero-supervisor depends on the SDK");
        if SUPERVISOR_BINARY_ONLY.contains(&d.name.as_str()) && d.kind == "normal" {
            assert!(d.optional, "hero-supervisor's {} must be optional", d.name);
        }
    }
    for name in SUPERVISOR_BINARY_ONLY {
        assert!(
            supervisor
                .iter()
                .any(|d| d.name == name && d.kind == "normal"),
            "the binary uses {name}: the check above would pass vacuously"
        );
    }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The binary's own modules: `main.rs` and `cli/`.
fn is_binary_module(src: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(src).expect("under src");
    rel == Path::new("main.rs") || rel.starts_with("cli")
}

#[test]
fn no_library_module_of_the_supervisor_uses_the_binarys_crates() {
    let src = workspace_root().join("supervisor").join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let (binary, library): (Vec<_>, Vec<_>) =
        files.into_iter().partition(|p| is_binary_module(&src, p));
    assert!(library.iter().any(|p| p.ends_with("lib.rs")), "{library:?}");

    let mut found = Vec::new();
    for path in &library {
        let text = std::fs::read_to_string(path).expect("read");
        for (n, line) in text.lines().enumerate() {
            for what in binary_crates_in(line) {
                found.push(format!("{}:{}: {what}", path.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "library modules use the binary's crates:\n{found:#?}"
    );

    // The scan sees what it looks for: the binary's modules do use them.
    let in_binary: BTreeSet<String> = binary
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).expect("read");
            text.lines().flat_map(binary_crates_in).collect::<Vec<_>>()
        })
        .collect();
    for expected in [
        "clap::",
        "hero_script_runner",
        "use clap",
        "#[derive(Parser)]",
    ] {
        assert!(
            in_binary.contains(expected),
            "{in_binary:?} lacks {expected}"
        );
    }
}
