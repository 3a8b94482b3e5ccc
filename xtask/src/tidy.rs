//! Tidy: house-style checks that run as `#[test]`s, so `cargo test` enforces them.
//!
//! Every `.rs` file opens with a `//!` comment; functions stay within 70 lines; lines stay
//! within 100 columns; no debug macros or fix-me markers; every `unsafe` block is preceded by
//! a `// SAFETY:` comment; every file that contains `unsafe` code opts in with
//! `#![allow(unsafe_code)]` (or an item-level allow), so `grep` finds every unsafe module.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::project_root;

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    rust_files(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    fn sources() -> Vec<(PathBuf, String)> {
        let root = project_root();
        let mut files = Vec::new();
        for dir in ["crates", "examples", "xtask"] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 10, "tidy found too few files: {files:?}");
        files
            .into_iter()
            .map(|path| (path.clone(), std::fs::read_to_string(path).unwrap()))
            .collect()
    }

    /// The README's taste snippet is part of `examples/taste.rs`, verbatim, so it compiles
    /// (without warnings, under clippy) and runs.
    #[test]
    fn the_readme_taste_is_the_compiled_example() {
        let root = project_root();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let taste = readme
            .split_once("## A taste")
            .expect("README has ## A taste")
            .1;
        let block = taste.split_once("```rust\n").expect("a rust block").1;
        let block = block.split_once("```").expect("a closed block").0;
        let example = std::fs::read_to_string(root.join("examples/taste.rs")).unwrap();
        assert!(
            example.contains(block),
            "README.md's taste is not in examples/taste.rs: change both together"
        );
    }

    /// The README's taste of storage is part of `examples/storage_taste.rs`, verbatim.
    #[test]
    fn the_readme_storage_taste_is_the_compiled_example() {
        let root = project_root();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let taste = readme
            .split_once("### A taste of storage")
            .expect("README has ### A taste of storage")
            .1;
        let block = taste.split_once("```rust\n").expect("a rust block").1;
        let block = block.split_once("```").expect("a closed block").0;
        let example = std::fs::read_to_string(root.join("examples/storage_taste.rs")).unwrap();
        assert!(
            example.contains(block),
            "README.md's taste of storage is not in examples/storage_taste.rs: change both"
        );
    }

    /// The README's taste of datagrams is part of `examples/datagrams.rs`, verbatim.
    #[test]
    fn the_readme_datagram_taste_is_the_compiled_example() {
        let root = project_root();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let taste = readme
            .split_once("### A taste of datagrams")
            .expect("README has ### A taste of datagrams")
            .1;
        let block = taste.split_once("```rust\n").expect("a rust block").1;
        let block = block.split_once("```").expect("a closed block").0;
        let example = std::fs::read_to_string(root.join("examples/datagrams.rs")).unwrap();
        assert!(
            example.contains(block),
            "README.md's taste of datagrams is not in examples/datagrams.rs: change both"
        );
    }

    #[test]
    fn every_file_opens_with_a_doc_comment() {
        for (path, text) in sources() {
            assert!(
                text.starts_with("//!"),
                "{} lacks a //! header",
                path.display()
            );
        }
    }

    #[test]
    fn lines_fit_in_100_columns_and_no_debug_leftovers() {
        let banned = [
            concat!("db", "g!("),
            concat!("to", "do!("),
            concat!("FIX", "ME"),
        ];
        for (path, text) in sources() {
            for (number, line) in text.lines().enumerate() {
                let at = format!("{}:{}", path.display(), number + 1);
                // Links cannot be wrapped.
                let long = line.chars().count() > 100 && !line.contains("https://");
                assert!(!long, "{at}: longer than 100 columns");
                for word in banned {
                    assert!(!line.contains(word), "{at}: contains {word}");
                }
            }
        }
    }

    /// The function-length limit (TigerBeetle's): a longer function is two functions.
    const FUNCTION_LINES_MAX: usize = 70;

    /// Whether `line` starts a function item (`fn`, with any of `pub`, `pub(crate)`,
    /// `const`, `unsafe` before it).
    fn starts_function(line: &str) -> bool {
        let mut rest = line.trim_start();
        for prefix in ["pub(crate) ", "pub(super) ", "pub ", "const ", "unsafe "] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        rest.starts_with("fn ")
    }

    #[test]
    fn functions_stay_within_70_lines() {
        for (path, text) in sources() {
            let lines: Vec<&str> = text.lines().collect();
            for (start, line) in lines.iter().enumerate() {
                if !starts_function(line) {
                    continue;
                }
                // The signature ends at the first line ending in `{` (a body) or `;` (a
                // declaration, skipped).
                let Some(open) = (start..lines.len()).find(|&i| {
                    lines[i].trim_end().ends_with('{') || lines[i].trim_end().ends_with(';')
                }) else {
                    continue;
                };
                if lines[open].trim_end().ends_with(';') {
                    continue;
                }
                let indent = &line[..line.len() - line.trim_start().len()];
                let close = (open..lines.len()).find(|&i| lines[i] == format!("{indent}}}"));
                let Some(close) = close else { continue };
                let length = close - start + 1;
                assert!(
                    length <= FUNCTION_LINES_MAX,
                    "{}:{}: function of {length} lines (at most {FUNCTION_LINES_MAX})",
                    path.display(),
                    start + 1
                );
            }
        }
    }

    /// Whether `needle` occurs in `code` as a keyword, not the tail of an identifier.
    fn has_keyword(code: &str, needle: &str) -> bool {
        code.match_indices(needle).any(|(at, _)| {
            let before = code[..at].chars().next_back();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    }

    #[test]
    fn unsafe_blocks_say_why_and_files_opt_in() {
        let block = concat!("unsafe", " {");
        let marker = concat!("SAFETY", ":");
        for (path, text) in sources() {
            let lines: Vec<&str> = text.lines().collect();
            let mut uses_unsafe = false;
            for (idx, line) in lines.iter().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                if !has_keyword(code, block) && !has_keyword(code, concat!("unsafe", " impl")) {
                    continue;
                }
                uses_unsafe = true;
                // The SAFETY comment is within the few lines above (a statement may span
                // several lines before its unsafe block).
                let window = &lines[idx.saturating_sub(8)..=idx];
                assert!(
                    window.iter().any(|l| l.contains(marker)),
                    "{}:{}: unsafe without a SAFETY comment",
                    path.display(),
                    idx + 1
                );
            }
            if uses_unsafe {
                assert!(
                    text.contains(concat!("allow(", "unsafe_code)")),
                    "{} has unsafe code without opting in",
                    path.display()
                );
            }
        }
    }
}
