//! The documentation says what the product does, because it is generated
//! by the product and checked here:
//!
//! - a fenced block right after `<!-- output of: rollwise ARGS -->` in a
//!   Markdown file is exactly what `rollwise ARGS` prints (run from the
//!   repository's root); after `<!-- excerpt of: rollwise ARGS -->` each of
//!   its lines is a line of that output, in order;
//! - the committed SVG charts are exactly what their command writes;
//! - every relative link in every Markdown file points at a file that
//!   exists (and at a heading that exists, for `file.md#anchor`).
//!
//! `ROLLWISE_BLESS=1 cargo test --test docs` rewrites the `output of`
//! blocks and the SVGs from the current binary (excerpts are chosen by a
//! person: the failure prints the whole output to choose from).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bless() -> bool {
    std::env::var_os("ROLLWISE_BLESS").is_some_and(|v| v == "1")
}

/// `rollwise ARGS` from the repository's root: its standard output.
fn rollwise(args: &str) -> String {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = Command::new(env!("CARGO_BIN_EXE_rollwise"))
        .args(&args)
        .current_dir(root())
        .env_remove("KUBECONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("the rollwise binary runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The committed charts and the command that draws each (`{out}`: where).
const CHARTS: &[(&str, &str)] = &[
    (
        "examples/simulate/turns-bad.svg",
        "simulate --rollout examples/simulate/rollout.yaml --scenario examples/simulate/turns-bad.yaml --svg {out}",
    ),
    (
        "examples/simulate/healthy.svg",
        "simulate --rollout examples/simulate/rollout.yaml --scenario examples/simulate/healthy.yaml --svg {out}",
    ),
    (
        "examples/simulate/bad-canary-flagger.svg",
        "simulate --rollout examples/simulate/rollout.yaml --scenario examples/simulate/bad-canary.yaml --policy flagger --svg {out}",
    ),
];

#[test]
fn the_committed_charts_are_what_their_commands_draw() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut stale = Vec::new();
    for (file, command) in CHARTS {
        let out = dir.path().join("chart.svg");
        rollwise(&command.replace("{out}", &out.display().to_string()));
        let drawn = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{command}: {e}"));
        let committed = std::fs::read_to_string(root().join(file)).unwrap_or_default();
        if drawn != committed {
            if bless() {
                std::fs::write(root().join(file), &drawn).expect("write the chart");
            } else {
                stale.push(format!(
                    "{file} differs from `rollwise {}`",
                    command.replace("{out}", file)
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{}\n(ROLLWISE_BLESS=1 cargo test --test docs regenerates them)",
        stale.join("\n")
    );
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable directory") {
        let p = entry.expect("an entry").path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_dir() {
            if !name.starts_with('.') && name != "target" {
                markdown_files(&p, out);
            }
        } else if name.ends_with(".md") {
            out.push(p);
        }
    }
}

fn all_markdown() -> Vec<PathBuf> {
    let mut files = Vec::new();
    markdown_files(&root(), &mut files);
    files.sort();
    files
}

fn relative(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// One generated block: its marker kind, command, and the block's lines
/// (byte range of the body in the file).
struct Block {
    excerpt: bool,
    args: String,
    body: std::ops::Range<usize>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    for (marker, excerpt) in [
        ("<!-- output of: rollwise ", false),
        ("<!-- excerpt of: rollwise ", true),
    ] {
        let mut from = 0;
        while let Some(i) = text[from..].find(marker) {
            let start = from + i + marker.len();
            let end = start + text[start..].find("-->").expect("a closed marker");
            let args = text[start..end].trim().to_string();
            let fence = end + text[end..].find("```").expect("a block after the marker");
            let body_start = fence + text[fence..].find('\n').expect("a fence line") + 1;
            let body_end = body_start + text[body_start..].find("```").expect("a closed block");
            out.push(Block {
                excerpt,
                args,
                body: body_start..body_end,
            });
            from = body_end;
        }
    }
    out.sort_by_key(|b| b.body.start);
    out
}

fn trimmed_lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim_end).collect()
}

#[test]
fn generated_blocks_in_markdown_are_what_the_commands_print() {
    let mut problems = Vec::new();
    let mut seen = 0;
    for file in all_markdown() {
        let mut text = std::fs::read_to_string(&file).expect("readable Markdown");
        let mut rewritten = false;
        for b in blocks(&text).into_iter().rev() {
            seen += 1;
            let printed = rollwise(&b.args);
            let body = &text[b.body.clone()];
            if b.excerpt {
                let printed_lines = trimmed_lines(&printed);
                let mut at = 0;
                for line in trimmed_lines(body) {
                    match printed_lines[at..].iter().position(|l| *l == line) {
                        Some(i) => at += i + 1,
                        None => {
                            problems.push(format!(
                                "{}: `rollwise {}` does not print (in this order):\n{line}\nit prints:\n{printed}",
                                relative(&file),
                                b.args
                            ));
                            break;
                        }
                    }
                }
            } else if trimmed_lines(body) != trimmed_lines(&printed) {
                if bless() {
                    text.replace_range(b.body.clone(), &printed);
                    rewritten = true;
                } else {
                    problems.push(format!(
                        "{}: the block after `output of: rollwise {}` differs; it prints:\n{printed}",
                        relative(&file),
                        b.args
                    ));
                }
            }
        }
        if rewritten {
            std::fs::write(&file, text).expect("write the Markdown");
        }
    }
    assert!(seen >= 2, "only {seen} generated blocks found");
    assert!(
        problems.is_empty(),
        "{}\n(ROLLWISE_BLESS=1 cargo test --test docs rewrites `output of` blocks)",
        problems.join("\n\n")
    );
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// to dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// `(line, target)` of every inline link `[text](target)` outside code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Inline code spans are not links.
        let line: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("");
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or_default();
            out.push((n + 1, target.to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_markdown_points_at_something() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in all_markdown() {
        let text = std::fs::read_to_string(&file).expect("readable Markdown");
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                continue;
            }
            checked += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a directory").join(path)
            };
            let place = format!("{}:{line}: ({target})", relative(&file));
            if !resolved.exists() {
                broken.push(format!("{place}: no such file"));
                continue;
            }
            if let Some(fragment) = fragment
                && resolved.extension().is_some_and(|e| e == "md")
            {
                let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&target_text).iter().any(|a| a == fragment) {
                    broken.push(format!("{place}: no heading #{fragment}"));
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The repository's top-level folders a path in `code` may start with.
const REPO_DIRS: &[&str] = &[
    "docs/",
    "examples/",
    "crds/",
    "charts/",
    "src/",
    "tests/",
    "scripts/",
    "benches/",
];

/// A file named in a code span (`docs/analysis.md`) is a link too: it must
/// exist (from the repository's root). Spans with spaces, globs or
/// placeholders are commands or patterns, not names.
#[test]
fn every_repository_path_named_in_markdown_exists() {
    let mut missing = Vec::new();
    for file in all_markdown() {
        let text = std::fs::read_to_string(&file).expect("readable Markdown");
        let mut in_code = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            for (i, span) in line.split('`').enumerate() {
                let path = span.trim_end_matches('/');
                if i % 2 == 1
                    && REPO_DIRS.iter().any(|d| span.starts_with(d))
                    && !span.contains(|c: char| c.is_whitespace() || "*{}<>$|".contains(c))
                    && !root().join(path).exists()
                {
                    missing.push(format!("{}:{}: `{span}`", relative(&file), n + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths that do not exist:\n{}",
        missing.join("\n")
    );
}
