//! Dependencies point only downward: `sys-*` ← `dispatch-loop` ← `dispatch-net` ←
//! `echo-server`. Checked by reading each crate's manifest, so a wrong edge fails
//! `cargo test`.

/// The layer of each workspace crate; a crate may depend only on crates of a lower layer.
#[cfg(test)]
const LAYERS: &[(&str, u32)] = &[
    ("sys-uring", 0),
    ("sys-kqueue", 0),
    ("dispatch-loop", 1),
    ("dispatch-net", 2),
    ("dispatch-echo", 3),
    ("loadgen", 3),
    ("dispatch-wal", 2),
    ("examples", 4),
    ("xtask", 4),
];

/// The layer of each top-level module of dispatch-loop (`crates/dispatch-core/src`): a module
/// may import (`crate::name` outside comments and tests) only modules of a lower layer, so
/// that every arrow between modules points down (issue 20 found two upward imports tying 13
/// modules into one circle: the callback types, which name `Io`, now live beside it in `io/`,
/// and `BACKEND_ENV` beside `Options`; the simulator's public options beside its backend).
#[cfg(test)]
const CORE_MODULES: &[(&str, u32)] = &[
    ("pool", 0),
    ("stats", 0),
    ("clock", 0),
    ("timer", 0),
    ("waker", 0),
    ("aligned", 0),
    ("outbuf", 1),
    ("msg", 1),
    ("filebuf", 1),
    ("options", 1),
    ("poll", 1),
    ("operation", 2),
    ("error", 2),
    ("datagram", 2),
    ("completion", 3),
    ("slots", 3),
    ("backend", 4),
    ("sim", 5),
    ("io", 6),
];

#[cfg(test)]
mod tests {
    use super::{CORE_MODULES, LAYERS};
    use crate::project_root;

    fn layer(name: &str) -> u32 {
        LAYERS
            .iter()
            .find(|(crate_name, _)| *crate_name == name)
            .unwrap_or_else(|| panic!("crate {name} has no layer in xtask/src/deps.rs"))
            .1
    }

    /// The workspace crates a manifest names as dependencies (`name.workspace = true` or
    /// `name = { path = ... }` lines in any dependency table).
    fn workspace_deps(manifest: &str) -> Vec<&'static str> {
        let mut in_deps = false;
        let mut found = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_deps = line.contains("dependencies");
                continue;
            }
            if !in_deps {
                continue;
            }
            let key = line.split(['=', '.', ' ']).next().unwrap_or_default();
            if let Some((name, _)) = LAYERS.iter().find(|(name, _)| *name == key) {
                found.push(*name);
            }
        }
        found
    }

    /// The `name` of a manifest's `[package]` (its first `name = ` line).
    fn package_name(manifest: &str) -> &str {
        manifest
            .lines()
            .find_map(|line| line.trim().strip_prefix("name = "))
            .expect("a package name")
            .trim_matches('"')
    }

    #[test]
    fn dependencies_point_downward() {
        let root = project_root();
        let mut members = vec![("examples".to_owned(), root.join("examples/Cargo.toml"))];
        members.push(("xtask".to_owned(), root.join("xtask/Cargo.toml")));
        for entry in std::fs::read_dir(root.join("crates")).unwrap() {
            // Named by its package (`crates/dispatch-core` holds `dispatch-loop`).
            let manifest = entry.unwrap().path().join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest).unwrap();
            members.push((package_name(&text).to_owned(), manifest));
        }
        for (name, manifest) in members {
            let text = std::fs::read_to_string(&manifest).unwrap();
            // A crate may dev-depend on itself to turn on its own features in its tests
            // (dispatch-loop's and dispatch-net's `sim`): that edge points nowhere.
            for dep in workspace_deps(&text).into_iter().filter(|&dep| dep != name) {
                assert!(
                    layer(dep) < layer(&name),
                    "{name} depends on {dep}: dependencies must point downward"
                );
            }
        }
    }

    #[test]
    fn the_checker_sees_a_dependency() {
        let manifest = "[dependencies]\ndispatch-loop.workspace = true\n[features]\nsys-uring = []";
        assert_eq!(workspace_deps(manifest), vec!["dispatch-loop"]);
    }

    /// The modules a source file imports from its crate: `crate::name` on lines that are not
    /// comments, before the file's `#[cfg(test)]` part.
    fn crate_imports(source: &str) -> Vec<&str> {
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let mut found = Vec::new();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let mut words = rest.split(|c: char| !c.is_ascii_alphanumeric() && c != '_');
                let name = words.next().unwrap_or_default();
                let before = line[..at].chars().last();
                let whole_word = before.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
                if whole_word && name.starts_with(|c: char| c.is_ascii_lowercase()) {
                    found.push(name);
                }
            }
        }
        found
    }

    fn core_layer(module: &str) -> u32 {
        CORE_MODULES
            .iter()
            .find(|(name, _)| *name == module)
            .unwrap_or_else(|| panic!("dispatch-loop module {module} has no layer in deps.rs"))
            .1
    }

    fn rust_files(dir: &std::path::Path, into: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push(path);
            }
        }
    }

    #[test]
    fn dispatch_loop_modules_import_only_downward() {
        let src = project_root().join("crates/dispatch-core/src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_str().unwrap().trim_end_matches(".rs");
            if module == "lib" {
                continue;
            }
            let source = std::fs::read_to_string(&file).unwrap();
            for import in crate_imports(&source).into_iter().filter(|&m| m != module) {
                assert!(
                    core_layer(import) < core_layer(module),
                    "{} imports crate::{import}: modules must import downward",
                    relative.display()
                );
            }
        }
    }

    #[test]
    fn the_module_checker_sees_imports_not_comments() {
        let source = "use crate::pool::Pool;\n// crate::io\nlet x = crate::Io::new();\n";
        assert_eq!(crate_imports(source), vec!["pool"]);
    }
}
