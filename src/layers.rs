//! The layer check: every `crate::…` path in a file under `src/` must point at its own layer or
//! one below it. The direction is http → services → db → domain; see docs/architecture.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// For each top-level module, the top-level modules its files may name (besides itself).
/// Anything not listed is refused, so a new module must be placed here on purpose.
const ALLOWED: &[(&str, &[&str])] = &[
    // The domain imports nothing of the app: no database, no HTTP, no app error.
    ("domain", &[]),
    // All SQL; returns domain types.
    ("db", &["domain"]),
    // Leaves with no app imports at all (the embedded server only borrows the hex encoder,
    // the configuration the currency type that checks `--default-currency`).
    ("metrics", &[]),
    ("config", &["domain"]),
    ("embedded_pg", &["domain"]),
    // The app error: wraps domain refusals, classifies database errors through db.
    ("error", &["db", "domain"]),
    // Services. Among themselves: purchase reads live's availability hint and records through
    // idempotency; holds charges through payment, records through idempotency and batches
    // its settles with purchase's coalescer; the sweeper expires and settles through holds
    // and payment.
    // The simulated provider batches its ledger writes with purchase's coalescer.
    ("payment", &["db", "domain", "error", "purchase"]),
    ("idempotency", &["db", "domain", "error"]),
    // The waiting list's walk, made by every path that returns tickets, under its locks.
    ("offers", &["db", "domain", "error"]),
    // The organiser's catalogue writes (event settings, ticket types, quotas): their own
    // transactions under the event lock; a change that frees tickets offers them to the
    // waiting list through offers, in the same transaction.
    ("catalogue", &["db", "domain", "error", "offers"]),
    // The waiting list's joins and leaves: under the event lock, offering what a leave frees
    // (and declining an offered hold) through holds.
    (
        "waiting_list",
        &["db", "domain", "error", "holds", "offers"],
    ),
    // Coalesced reads of an event: the catalogue's read, through purchase's coalescer.
    ("reads", &["catalogue", "db", "domain", "error", "purchase"]),
    ("live", &["db", "domain", "error", "metrics"]),
    // Admission at the door: its keys and check-ins; single scans of one event are
    // coalesced with purchase's coalescer.
    ("admission", &["db", "domain", "error", "purchase"]),
    // Scoped API tokens: made by the CLI, recognised by the HTTP extractors (concurrent
    // lookups of one token coalesced with purchase's coalescer).
    ("tokens", &["db", "domain", "error", "purchase"]),
    (
        "purchase",
        &[
            "db",
            "domain",
            "error",
            "metrics",
            "idempotency",
            "live",
            "offers",
        ],
    ),
    (
        "holds",
        &[
            "db",
            "domain",
            "error",
            "payment",
            "idempotency",
            "purchase",
            "offers",
        ],
    ),
    (
        "sweeper",
        &["db", "domain", "error", "metrics", "holds", "payment"],
    ),
    // HTTP: every layer below, never the start-up code.
    (
        "http",
        &[
            "db",
            "domain",
            "error",
            "metrics",
            "payment",
            "catalogue",
            "idempotency",
            "live",
            "purchase",
            "holds",
            "reads",
            "sweeper",
            "admission",
            "tokens",
            "waiting_list",
        ],
    ),
    // The composition root builds everything.
    (
        "server",
        &[
            "config",
            "db",
            "domain",
            "embedded_pg",
            "admission",
            "error",
            "holds",
            "http",
            "idempotency",
            "live",
            "metrics",
            "payment",
            "purchase",
            "reads",
            "sweeper",
            "tokens",
        ],
    ),
];

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The top-level modules `source` names through `crate::…` paths, outside comments.
fn named_modules(source: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let before_ok = at == 0
                || !rest[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if before_ok && !name.is_empty() {
                named.insert(name);
            } else if before_ok && after.starts_with('{') {
                // `use crate::{a, b::c}`: every first segment inside the braces.
                let group = after[1..].split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let first: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !first.is_empty() {
                        named.insert(first);
                    }
                }
            }
            rest = after;
        }
    }
    named
}

/// Every import that runs against the layer direction, as "file names module".
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src/");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("")
            .trim_end_matches(".rs")
            .to_owned();
        // The crate root and the binary declare modules; this check itself names none.
        if matches!(top.as_str(), "lib" | "main" | "layers") {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(module, _)| *module == top) else {
            found.push(format!(
                "{}: module `{top}` has no place in layers.rs",
                relative.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(&file).expect("a readable source file");
        for named in named_modules(&source) {
            if named != top && !allowed.contains(&named.as_str()) {
                found.push(format!(
                    "{}: `{top}` may not import `crate::{named}`",
                    relative.display()
                ));
            }
        }
    }
    found
}

#[test]
fn imports_follow_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "imports against the layers:\n{}",
        found.join("\n")
    );
}

#[test]
fn paths_are_found_in_uses_groups_and_expressions() {
    let source = "use crate::db::events;\nuse crate::{error::Error, live};\n\
                  // crate::http in a comment\nlet x = crate::metrics::render(p);\n";
    let named: Vec<String> = named_modules(source).into_iter().collect();
    assert_eq!(named, ["db", "error", "live", "metrics"]);
}
