//! ARCHITECTURE.md's layering, checked: the server crate's top-level modules
//! import one another without a circle, and only the top of the house (the
//! endpoints and the server) sees `App`, the broker's implementations and the
//! deployment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and the top-level modules its non-test code names
/// as `crate::…` (doc links count: they are dependencies a reader follows).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let module = relative.split(['/', '.']).next().unwrap().to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let deps = graph.entry(module.clone()).or_default();
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn the_server_crate_has_no_import_circle() {
    let graph = imports();
    // Depth-first search for a path from each module back to itself.
    for start in graph.keys() {
        let mut stack: Vec<Vec<&String>> = vec![vec![start]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = *path.last().unwrap();
            for next in graph.get(last).into_iter().flatten() {
                assert!(
                    next != start,
                    "import circle: {} -> {next}",
                    path.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" -> ")
                );
                if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }
}

#[test]
fn only_the_top_of_the_house_knows_the_app_and_the_deployment() {
    let graph = imports();
    let top: BTreeSet<&str> = ["app", "endpoints", "server", "main", "lib"].into();
    for (module, deps) in &graph {
        if top.contains(module.as_str()) {
            continue;
        }
        assert!(!deps.contains("app"), "`{module}` reaches up into `app`");
        assert!(!deps.contains("endpoints"), "`{module}` reaches up into `endpoints`");
        if module != "cluster" {
            assert!(!deps.contains("cluster"), "`{module}` knows the Redis deployment");
        }
    }
    // The hub meets both deployments at the broker seam and nowhere else.
    assert!(graph["hub"].contains("broker"));
    assert!(!graph["broker"].contains("hub"));
    assert!(!graph["endpoints"].contains("cluster"), "an endpoint knows the deployment");
}
