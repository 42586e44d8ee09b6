//! The layering of `docs/ARCHITECTURE.md`, checked on the source: no two
//! top-level modules of the engine import each other (directly or round a
//! longer loop), and the deterministic and offline layers never reach the
//! runtime or the test tools.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Modules that may not name `crate::runtime` or `verity_tools`.
const BELOW_THE_RUNTIME: &[&str] = &[
    "app", "apps", "codec", "config", "core", "log", "logdump", "registry", "replay", "ring",
    "routing", "sim", "storage", "sync", "trace",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the files that make it up (`src/lib.rs`'s modules).
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut mods = BTreeMap::new();
    for entry in fs::read_dir(src).expect("read src").flatten() {
        let p = entry.path();
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if p.is_dir() {
            if name == "bin" {
                continue;
            }
            let mut files = Vec::new();
            rust_files(&p, &mut files);
            mods.insert(name, files);
        } else if p.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            mods.insert(name, vec![p]);
        }
    }
    mods
}

/// The code of a file without its comments (doc comments name modules
/// they do not import).
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("read source");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `PREFIX::NAME` named in `code` (the names after `prefix`).
fn refs(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        found.insert(name);
    }
    found
}

/// Every `crate::NAME` named in `code`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    refs(code, "crate::")
}

#[test]
fn no_module_imports_one_that_imports_it_back_and_the_lower_layers_never_reach_the_runtime() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut bad = Vec::new();
    for (name, files) in &mods {
        let edges = graph.entry(name.clone()).or_default();
        for f in files {
            let c = code(f);
            for r in crate_refs(&c) {
                if &r != name && mods.contains_key(&r) {
                    edges.insert(r);
                }
            }
            if BELOW_THE_RUNTIME.contains(&name.as_str())
                && (c.contains("crate::runtime") || c.contains("verity_tools"))
            {
                bad.push(f.display().to_string());
            }
        }
    }
    assert!(
        bad.is_empty(),
        "below the runtime, these name the runtime or verity_tools: {bad:?}"
    );
    // A cycle: a module reachable from one of its own imports.
    for (start, edges) in &graph {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = edges.iter().collect();
        while let Some(m) = todo.pop() {
            assert!(
                m != start,
                "import cycle through module {start} (graph: {graph:?})"
            );
            if seen.insert(m.clone()) {
                todo.extend(graph.get(m).into_iter().flatten());
            }
        }
    }
    // The check sees the modules it is about.
    for m in ["core", "runtime", "storage", "sim", "config"] {
        assert!(graph.contains_key(m), "module {m} not found under src/");
    }
    assert!(graph["runtime"].contains("core"));
}

/// A cycle in `graph`, as the path that closes it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

/// Inside each directory module, the files import one another without a
/// cycle: the runtime's parts (inbound, outbound, store, faults) know
/// nothing of the worker that composes them, the simulator's actors
/// nothing of the world. `mod.rs` (the module's index) is left out.
#[test]
fn no_file_of_a_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = Vec::new();
    for dir in [
        "runtime", "sim", "core", "storage", "config", "log", "harness", "cli",
    ] {
        let d = src.join(dir);
        let files: BTreeMap<String, PathBuf> = fs::read_dir(&d)
            .expect("read module dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p.clone())))
            .filter(|(name, _)| name != "mod")
            .collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, path) in &files {
            // Production code only: a file's test module (at its end) may
            // use any sibling.
            let all = code(path);
            let c = all.split("#[cfg(test)]").next().unwrap_or_default();
            let mut named = refs(c, "super::");
            named.extend(
                crate_refs(&c.replace(&format!("crate::{dir}::"), "crate::"))
                    .into_iter()
                    .filter(|r| files.contains_key(r)),
            );
            let edges = named
                .into_iter()
                .filter(|r| r != name && files.contains_key(r))
                .collect();
            graph.insert(name.clone(), edges);
        }
        if let Some(c) = cycle(&graph) {
            panic!("import cycle in src/{dir}/: {}", c.join(" -> "));
        }
        checked.push((dir, graph.len()));
    }
    // The check sees the files it is about.
    assert!(
        checked.iter().any(|&(d, n)| d == "runtime" && n >= 10),
        "{checked:?}"
    );
}

/// Every `defect-*` feature of Cargo.toml is in src/lib.rs's guard, which
/// refuses to build it without `--cfg verity_defect` (so `cargo build
/// --all-features` cannot ship a defect).
#[test]
fn every_defect_feature_needs_the_verity_defect_cfg() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let lib = fs::read_to_string(root.join("src/lib.rs")).expect("src/lib.rs");
    let guard = lib
        .split("compile_error!")
        .next()
        .and_then(|head| head.rsplit("#[cfg(all(").next())
        .unwrap_or_default();
    assert!(guard.contains("not(verity_defect)"), "{guard}");
    let defects: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("defect-"))
        .filter_map(|l| l.split_once(" = "))
        .map(|(name, _)| name)
        .collect();
    assert!(defects.len() >= 3, "{defects:?}");
    for d in defects {
        assert!(
            guard.contains(&format!("feature = \"defect-{d}\"")),
            "defect-{d} builds without --cfg verity_defect"
        );
    }
}
