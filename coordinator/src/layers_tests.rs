//! The coordinator's module order, checked: every top-level module imports
//! (`crate::NAME`) only from modules in lower layers, so the module graph
//! has no circle. A new module must be given its layer here.
//!
//! It reads the source text the way `use` lines are written; it is not a
//! type check, and it leaves each module's internal structure alone.

use std::collections::BTreeSet;
use std::path::Path;

/// Lowest first; a module may import from any strictly lower layer.
const LAYERS: &[&[&str]] = &[
    &["clock", "inventory", "telemetry"],
    &["registry"],
    &["error", "dispatch", "metrics"],
    &["authz", "runs", "tokens", "resolve", "correlate"],
    &["state"],
    &["execute"],
    &["tool_run", "capture"],
    &["diagnose"],
    &["clock_udp", "enroll"],
    &["link", "control"],
    &["server"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The source of `path` without its inline test module and test-only files.
fn production_text(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == "tests.rs" || name == "testing.rs" || name.ends_with("_tests.rs") {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    Some(match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_owned(),
        None => text,
    })
}

/// Every `crate::NAME` that `text` names.
fn imports(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .filter(|(at, _)| {
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, m)| {
            text[at + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_import_only_from_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for path in files {
        let rel = path.strip_prefix(&src).unwrap_or(&path);
        let Some(top) = rel.iter().next().and_then(|c| c.to_str()) else {
            continue;
        };
        let module = top.trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue;
        }
        seen.insert(module.to_owned());
        let Some(text) = production_text(&path) else {
            continue;
        };
        let Some(own) = layer(module) else {
            wrong.push(format!("{module}: not in LAYERS"));
            continue;
        };
        for import in imports(&text) {
            if import == module {
                continue;
            }
            match layer(&import) {
                Some(theirs) if theirs < own => {}
                _ => wrong.push(format!(
                    "{}: {module} imports crate::{import} (not in a lower layer)",
                    rel.display()
                )),
            }
        }
    }
    wrong.extend(
        LAYERS
            .iter()
            .flat_map(|l| l.iter())
            .filter(|m| !seen.contains(**m))
            .map(|m| format!("{m}: in LAYERS but no such module")),
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_reader_sees_crate_paths_and_nothing_else() {
    let text = "use crate::state::Coordinator;\nuse foo_crate::x;\n[`crate::execute`]";
    assert_eq!(
        imports(text),
        BTreeSet::from(["state".to_owned(), "execute".to_owned()])
    );
}
