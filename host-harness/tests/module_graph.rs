//! The harness's layers, checked from its source: every module's imports (`crate::…`,
//! `super::…`, and the child modules it declares) point down, never up or sideways between
//! the two top layers, and no chain of imports comes back to where it started.
//!
//! Layers (see `src/lib.rs` and docs/ARCHITECTURE.md): `host` (0) < `model` (1) < `live`,
//! `scripted` (2, siblings that must not import each other); `guest_build` (0) beside them
//! imports nothing; the crate root (`lib.rs`) sits above all and nothing imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path below the crate root: `["host", "hostcalls", "buffers"]`.
type ModPath = Vec<String>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library module and its source file (`main.rs`, the binary, is not part of the graph).
fn modules() -> BTreeMap<ModPath, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src_dir()).expect("below src");
            let mut parts: ModPath = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            match parts.last().map(String::as_str) {
                Some("main") if parts.len() == 1 => continue,
                Some("lib") if parts.len() == 1 => parts.clear(),
                Some("mod") => {
                    parts.pop();
                }
                _ => {}
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            // Unit tests sit in an inline `mod tests` at the end, where `super` is the file
            // itself: they import nothing of their own.
            let code = match text.find("#[cfg(test)]") {
                Some(at) => &text[..at],
                None => &text,
            };
            out.insert(parts, strip_comments(code));
        }
    }
    out
}

/// The code without `//` comments (doc links may name any module).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths named after `prefix` at byte `at` of `code`: `a::b::Item` gives
/// `[a, b, Item]`; a `{...}` group gives one path per item (`a::{b::X, c}`).
fn paths_at(code: &str, at: usize) -> Vec<Vec<String>> {
    let rest = &code[at..];
    let mut segments = Vec::new();
    let mut i = 0;
    loop {
        let ident: String = rest[i..].chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            break;
        }
        i += ident.len();
        segments.push(ident);
        if rest[i..].starts_with("::") {
            i += 2;
        } else {
            return vec![segments];
        }
    }
    if !rest[i..].starts_with('{') {
        return vec![segments];
    }
    // One level of braces: split the group at top-level commas.
    let mut depth = 0;
    let mut start = i + 1;
    let mut out = Vec::new();
    for (j, c) in rest[i..].char_indices() {
        let j = i + j;
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let item = rest[start..j].trim();
                if !item.is_empty() && item != "self" && !item.starts_with("self ") {
                    for tail in paths_at(item, 0) {
                        let mut p = segments.clone();
                        p.extend(tail);
                        out.push(p);
                    }
                } else if !item.is_empty() {
                    out.push(segments.clone());
                }
                if c == '}' {
                    break;
                }
                start = j + 1;
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    out
}

/// Occurrences of `word::` in `code` that start a path (not the tail of a longer one).
fn path_starts(code: &str, word: &str) -> Vec<usize> {
    let needle = format!("{word}::");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find(&needle) {
        let at = from + found;
        let before = code[..at].chars().next_back();
        let after_colons = code[..at].ends_with("::");
        if !before.is_some_and(is_ident) && !after_colons {
            out.push(at + needle.len());
        }
        from = at + needle.len();
    }
    out
}

/// The longest prefix of `path` that is a module (the module an import reaches).
fn resolve(path: &[String], known: &BTreeMap<ModPath, String>) -> ModPath {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains_key(p))
        .unwrap_or_default()
}

/// Child modules a file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn declared_children(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.split("mod ").nth(1)?;
            let head = &l[..l.len() - rest.len() - 4];
            let visibility_only = head.is_empty()
                || head == "pub "
                || (head.starts_with("pub(") && head.ends_with(") "));
            let name = rest.strip_suffix(';')?;
            (visibility_only && name.chars().all(is_ident)).then(|| name.to_string())
        })
        .collect()
}

/// Which modules each module imports.
fn import_graph() -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let known = modules();
    let mut graph = BTreeMap::new();
    for (module, code) in &known {
        let mut targets = BTreeSet::new();
        for at in path_starts(code, "crate") {
            for p in paths_at(code, at) {
                targets.insert(resolve(&p, &known));
            }
        }
        for at in path_starts(code, "super") {
            let parent = module[..module.len().saturating_sub(1)].to_vec();
            for p in paths_at(code, at) {
                let mut full = parent.clone();
                full.extend(p);
                targets.insert(resolve(&full, &known));
            }
        }
        for child in declared_children(code) {
            let mut full = module.clone();
            full.push(child);
            targets.insert(full);
        }
        targets.remove(module);
        graph.insert(module.clone(), targets);
    }
    graph
}

/// A module's layer: its rank and its top-level directory.
fn layer(module: &ModPath) -> (u8, &str) {
    match module.first().map(String::as_str) {
        None => (3, "crate root"),
        Some("host") => (0, "host"),
        Some("model") => (1, "model"),
        Some("live") => (2, "live"),
        Some("scripted") => (2, "scripted"),
        // A leaf beside the layers: it imports nothing of the crate.
        Some("guest_build") => (0, "guest_build"),
        Some(other) => panic!("module {other} is in no layer: add it to this test's layers"),
    }
}

fn name(module: &ModPath) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn imports_only_point_down_the_layers() {
    let mut wrong = Vec::new();
    for (from, targets) in import_graph() {
        let (from_rank, from_dir) = layer(&from);
        for to in &targets {
            let (to_rank, to_dir) = layer(to);
            if to_rank > from_rank || (to_rank == from_rank && to_dir != from_dir) {
                wrong.push(format!(
                    "{} ({from_dir}) imports {} ({to_dir})",
                    name(&from),
                    name(to)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_imports_itself_through_others() {
    let graph = import_graph();
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit(
        m: &ModPath,
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        path: &mut Vec<ModPath>,
        done: &mut BTreeSet<ModPath>,
        cycles: &mut Vec<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle: Vec<String> = path[at..].iter().map(name).collect();
            cycle.push(name(m));
            cycles.push(cycle.join(" -> "));
            return;
        }
        path.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done, cycles);
        }
        path.pop();
        done.insert(m.clone());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_check_sees_the_imports_it_must_see() {
    // Guards the scanner itself: a parser that found nothing would pass the checks above.
    let graph = import_graph();
    let path = |s: &str| s.split("::").map(str::to_string).collect::<ModPath>();
    let edges = |from: &str| graph.get(&path(from)).cloned().unwrap_or_default();
    assert!(edges("host::hostcalls::buffers").contains(&path("host::hostcalls::common")));
    assert!(edges("host::hostcalls::buffers").contains(&path("host::contexts")));
    assert!(edges("host::hostcalls").contains(&path("host::hostcalls::metrics")));
    assert!(edges("model::stream").contains(&path("model::contexts")));
    assert!(edges("model::contexts").contains(&path("host::vm")));
    assert!(edges("live::proxy").contains(&path("live::tcp")));
    assert!(edges("scripted::scenario").contains(&path("model")));
}
