//! The library's top-level modules import each other without a cycle (issue 16 §2).
//!
//! Every `crate::x` path in a module's files (code, not comments; `use crate::{a, b}` too) is an
//! edge from that top-level module to `x`. The graph must have no cycle, and the edges that
//! used to close one — `config` ↔ `gateway` (limits) ↔ `registry_db` ↔ `audit` — go one way:
//! the configuration converts into the gateway's and the registry's types, never the reverse,
//! and the shared types live below both (`v6iot-credentials`, `seal`, `peer`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Files of top-level module `name`: `src/name.rs` and everything under `src/name/`.
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = src.join(format!("{name}.rs"));
    if file.is_file() {
        files.push(file);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The text without `//` comments (doc links are not imports).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `crate::…` paths in `code` name.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, …}`: the first segment of each item at depth one.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        found.insert(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let modules: Vec<String> = strip_comments(&lib)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect();
    let mut graph = Graph::new();
    for m in &modules {
        let mut edges = BTreeSet::new();
        for file in module_files(&src, m) {
            let code = strip_comments(&std::fs::read_to_string(&file).unwrap());
            edges.extend(
                crate_paths(&code)
                    .into_iter()
                    .filter(|t| t != m && modules.contains(t)),
            );
        }
        graph.insert(m.clone(), edges);
    }
    graph
}

/// A cycle in `graph`, if there is one (depth-first search, the path on the stack).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_parser_finds_grouped_and_plain_paths() {
    let code = "use crate::a::B;\nuse crate::{c, d::{E, F}, g as h};\nlet x = crate::i::j();";
    let found: Vec<String> = crate_paths(code).into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "g", "i"]);
    assert_eq!(strip_comments("x // crate::y\n//! [`crate::z`]"), "x \n");
    let mut g = Graph::new();
    g.insert("a".into(), ["b".into()].into());
    g.insert("b".into(), ["c".into()].into());
    g.insert("c".into(), ["a".into()].into());
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = graph();
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    // The graph was read: the server drives everything, the configuration converts into the
    // gateway's and the registry's types.
    assert!(graph.len() >= 10, "{graph:?}");
    assert!(edges >= 20, "{edges} edges: {graph:?}");
    assert!(graph["server"].contains("gateway"), "{graph:?}");
    assert!(graph["config"].contains("gateway"), "{graph:?}");
    assert!(graph["config"].contains("registry_db"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules import each other in a circle: {}",
            cycle.join(" -> ")
        );
    }
    // The edges that closed the old circle go one way only.
    for (from, to) in [
        ("gateway", "config"),
        ("gateway", "registry_db"),
        ("registry_db", "config"),
        ("audit", "registry_db"),
    ] {
        assert!(!graph[from].contains(to), "{from} imports {to}: {graph:?}");
    }
    // The leaves import nothing of the crate.
    for leaf in ["seal", "peer"] {
        assert!(graph[leaf].is_empty(), "{leaf} imports {:?}", graph[leaf]);
    }
}
