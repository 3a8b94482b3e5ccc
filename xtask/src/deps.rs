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
    ("examples", 4),
    ("xtask", 4),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
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
}
