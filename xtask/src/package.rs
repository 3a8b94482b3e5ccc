//! `cargo xtask test`'s packaging check: every crate that is published (each member without
//! `publish = false`, read from `cargo metadata`) is packaged as `cargo publish` would upload
//! it, and each package is built alone from its own files. A file the build needs that the
//! package leaves out, or a dependency declared only through the workspace, fails here rather
//! than on the registry.
//!
//! `cargo package -p A -p B ...` packages the crates in dependency order and resolves the
//! workspace crates they depend on from a temporary local registry of the packages just made,
//! so nothing needs to be on crates.io first. `--allow-dirty`: the check is about what the
//! package holds, not whether the work tree is committed. Each package must also hold both
//! licence texts and its README (`license = "MIT OR Apache-2.0"`).

use crate::cmd::Cmd;
use crate::metadata::Member;

/// The files every published crate's package holds.
const REQUIRED_FILES: [&str; 3] = ["LICENSE-MIT", "LICENSE-APACHE", "README.md"];

pub fn run(members: &[Member]) -> Result<(), String> {
    let published: Vec<&str> = members
        .iter()
        .filter(|member| member.publish)
        .map(|member| member.name.as_str())
        .collect();
    if published.is_empty() {
        eprintln!("xtask: no crate is published: nothing to package");
        return Ok(());
    }
    for &name in &published {
        let list =
            Cmd::cargo(&["package", "--list", "--allow-dirty", "-p", name]).run_for_output()?;
        let missing = missing_files(&list);
        if !missing.is_empty() {
            return Err(format!(
                "the package of {name} lacks {} (each crate has its own README.md and links \
                 to the root's licence texts)",
                missing.join(", ")
            ));
        }
    }
    // `--offline`: the steps before resolved and downloaded every crate the packages need, and
    // without it cargo would update the crates.io index, so `cargo xtask test` would need the
    // network for this step alone.
    forget_extracted(&published);
    // The packages are built in a target directory of their own, cleaned of earlier builds
    // of these crates first: cargo takes a registry crate of a given name and version to be
    // immutable, so a build of an earlier package of the same version (`sys-uring` 0.1.0
    // before a method was added, say) was reused, and the crates calling the new method
    // failed to build from their packages. Their dependencies stay built there.
    let target_dir = crate::project_root().join("target/package-check");
    let target_dir = target_dir.to_str().ok_or("a UTF-8 target directory")?;
    let mut clean = Cmd::cargo(&["clean", "--offline", "--target-dir", target_dir]);
    let mut package = Cmd::cargo(&["package", "--allow-dirty", "--offline"]);
    package = package.args(&["--target-dir", target_dir]);
    for name in published {
        clean = clean.args(&["-p", name]);
        package = package.args(&["-p", name]);
    }
    clean.run()?;
    package.run()
}

/// Removes cargo's extracted copies of earlier packages of `published` crates
/// (`$CARGO_HOME/registry/src/*/NAME-VERSION`). The verify step unpacks each package from a
/// temporary registry into that cache, and cargo reuses an unpacked copy of the same name and
/// version without looking at the new package: after an edit (a rename of a crate this one
/// uses, say), the check would build the old sources. Only a cache: cargo unpacks again.
fn forget_extracted(published: &[&str]) {
    let Some(src) = crate::cargo_home().map(|home| home.join("registry/src")) else {
        return;
    };
    let Ok(registries) = std::fs::read_dir(src) else {
        return;
    };
    for registry in registries.flatten() {
        let Ok(crates) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for unpacked in crates.flatten() {
            let name = unpacked.file_name().to_string_lossy().into_owned();
            let ours = published.iter().any(|crate_name| {
                name.strip_prefix(crate_name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            });
            if ours {
                let _ = std::fs::remove_dir_all(unpacked.path());
            }
        }
    }
}

/// The required files that `cargo package --list`'s output does not name.
fn missing_files(list: &str) -> Vec<&'static str> {
    REQUIRED_FILES
        .into_iter()
        .filter(|&file| !list.lines().any(|line| line == file))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_without_a_licence_text_is_caught() {
        let full = "Cargo.toml\nLICENSE-APACHE\nLICENSE-MIT\nREADME.md\nsrc/lib.rs\n";
        assert!(missing_files(full).is_empty());
        let partial = "Cargo.toml\nLICENSE-MIT\nsrc/LICENSE-APACHE\n";
        assert_eq!(missing_files(partial), ["LICENSE-APACHE", "README.md"]);
    }
}
