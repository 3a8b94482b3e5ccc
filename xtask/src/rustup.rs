//! rustup: the components, targets and toolchains each command needs, added where missing so
//! that every command works on a fresh machine. Installs are echoed like any other step, and a
//! failed one stops the command with one line saying what could not be installed.
//!
//! `rust-toolchain.toml` pins the toolchain the project is tested with, with its components
//! and targets: rustup normally installs all of it on the first `cargo` call. These checks
//! cover machines where it does not (`RUSTUP_AUTO_INSTALL=0`, or a toolchain chosen with
//! `cargo +VERSION xtask ...`).

use crate::cmd::Cmd;

/// Whether rustup manages this machine's toolchains.
pub fn available() -> bool {
    Cmd::new("rustup", &["--version"]).query().is_some()
}

/// The toolchain this xtask runs under, for messages.
fn active_toolchain() -> String {
    std::env::var("RUSTUP_TOOLCHAIN")
        .ok()
        .or_else(|| {
            let shown = Cmd::new("rustup", &["show", "active-toolchain"]).query()?;
            shown.split_whitespace().next().map(str::to_owned)
        })
        .unwrap_or_else(|| "the active toolchain".to_owned())
}

/// The host's target triple (`x86_64-unknown-linux-gnu`), from `rustc -vV`.
pub fn host() -> Result<String, String> {
    let version = Cmd::new("rustc", &["-vV"])
        .query()
        .ok_or("`rustc -vV` failed: is Rust installed?")?;
    version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| format!("`rustc -vV` names no host:\n{version}"))
}

/// Whether `toolchain` (`None`: the active one) has every component in `components`.
fn has_components(toolchain: Option<&str>, components: &[&str]) -> Result<bool, String> {
    let mut args = vec!["component", "list", "--installed"];
    if let Some(toolchain) = toolchain {
        args.extend(["--toolchain", toolchain]);
    }
    let Some(installed) = Cmd::new("rustup", &args).query() else {
        return Ok(false);
    };
    let host = host()?;
    Ok(components.iter().all(|component| {
        installed
            .lines()
            .any(|line| line == *component || line == format!("{component}-{host}"))
    }))
}

/// Adds `components` (rustfmt, clippy) to the active toolchain where missing.
pub fn ensure_components(components: &[&str]) -> Result<(), String> {
    if has_components(None, components)? {
        return Ok(());
    }
    let mut args = vec!["component", "add"];
    args.extend(components);
    Cmd::new("rustup", &args).run().map_err(|error| {
        format!(
            "{error}: {} lacks {}",
            active_toolchain(),
            components.join(" or ")
        )
    })
}

/// Adds the standard libraries of `targets` to the active toolchain where missing. Fails with
/// one line naming the targets when they cannot be installed.
pub fn ensure_targets(targets: &[&str]) -> Result<(), String> {
    let installed = Cmd::new("rustup", &["target", "list", "--installed"])
        .query()
        .unwrap_or_default();
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|target| !installed.lines().any(|line| line == *target))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut args = vec!["target", "add"];
    args.extend(&missing);
    let libraries = if missing.len() == 1 {
        "standard library"
    } else {
        "standard libraries"
    };
    Cmd::new("rustup", &args).run().map_err(|error| {
        format!(
            "{error}: cannot install the {} {libraries} for {}, so the cross-target checks \
             cannot run (rust-toolchain.toml pins a toolchain whose targets install; \
             `--no-cross-targets` leaves these checks out)",
            missing.join(" and "),
            active_toolchain()
        )
    })
}

/// Installs `toolchain` (`nightly`, `1.88`) with `components` where missing.
pub fn ensure_toolchain(toolchain: &str, components: &[&str]) -> Result<(), String> {
    if !available() {
        return Err(format!(
            "rustup not found: it is needed to install the {toolchain} toolchain"
        ));
    }
    let installed = Cmd::new("rustup", &["toolchain", "list"])
        .query()
        .unwrap_or_default();
    let name = format!("{toolchain}-{}", host()?);
    let has_toolchain = installed
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name.as_str()));
    let mut install = Cmd::new("rustup", &["toolchain", "install", toolchain]).args(&[
        "--profile",
        "minimal",
        "--no-self-update",
    ]);
    if !components.is_empty() {
        install = install.args(&["--component", &components.join(",")]);
    }
    if !has_toolchain {
        return install.run();
    }
    if has_components(Some(toolchain), components)? {
        return Ok(());
    }
    let mut add = vec!["component", "add", "--toolchain", toolchain];
    add.extend(components);
    // A nightly may lack a component (Miri is sometimes broken): then move to the latest
    // nightly that has it.
    Cmd::new("rustup", &add).run().or_else(|_| install.run())
}
