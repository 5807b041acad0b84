//! "Tidy": the protocol cores stay pure (DESIGN.md rule 1). This test fails if
//! a protocol crate reads a clock, draws unseeded randomness, touches the OS
//! (files, sockets, threads) or depends on an async runtime.
//!
//! Protocol crates are listed in `PROTOCOL_CRATES`; add new cores there.

use std::path::{Path, PathBuf};

/// Crates that must stay sans-IO, relative to the workspace's `crates/`.
const PROTOCOL_CRATES: &[&str] = &["raft"];

/// Source patterns that betray I/O, clocks or unseeded randomness.
const FORBIDDEN_SOURCE: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "rand::random",
    "OsRng",
    "std::fs",
    "std::net",
    "std::thread",
    "tokio",
    "std::time::Instant",
];

/// Dependencies a protocol crate may not declare.
const FORBIDDEN_DEPENDENCIES: &[&str] = &["tokio", "tonic", "mio", "async-std", "rand"];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of `source` (outside comments) that use a forbidden pattern.
fn violations(source: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for pattern in FORBIDDEN_SOURCE {
            if code.contains(pattern) {
                found.push((number + 1, *pattern));
            }
        }
    }
    found
}

/// Names of forbidden dependencies in a Cargo.toml's `[dependencies]`.
fn forbidden_dependencies(manifest: &str) -> Vec<&'static str> {
    let mut in_deps = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if !in_deps {
            continue;
        }
        let name = line.split(['=', ' ', '.']).next().unwrap_or("");
        if let Some(bad) = FORBIDDEN_DEPENDENCIES.iter().find(|d| **d == name) {
            found.push(*bad);
        }
    }
    found
}

#[test]
fn protocol_crates_are_sans_io() {
    let mut problems = Vec::new();
    for krate in PROTOCOL_CRATES {
        let root = crates_dir().join(krate);
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("manifest");
        for dep in forbidden_dependencies(&manifest) {
            problems.push(format!("{krate}/Cargo.toml depends on {dep}"));
        }
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        assert!(!files.is_empty(), "no sources found for {krate}");
        for file in files {
            let source = std::fs::read_to_string(&file).expect("source");
            for (line, pattern) in violations(&source) {
                problems.push(format!("{}:{line} uses {pattern}", file.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "protocol cores must stay pure:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_catches_what_it_forbids() {
    // The tidy check itself must have teeth.
    assert_eq!(violations("let t = std::time::Instant::now();").len(), 2);
    assert_eq!(violations("let r = rand::thread_rng();").len(), 1);
    assert!(violations("// Instant::now is mentioned in a comment").is_empty());
    assert_eq!(
        forbidden_dependencies("[dependencies]\ntokio = \"1\"\nbytes.workspace = true\n"),
        vec!["tokio"]
    );
    assert!(forbidden_dependencies("[dev-dependencies]\ntokio = \"1\"\n").is_empty());
}
