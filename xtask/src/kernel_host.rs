//! `cargo xtask kernel-test`'s host side before any VM boots: the host packages (QEMU,
//! busybox-static, the musl target) installed where missing, and Debian's cloud kernels
//! fetched and unpacked into `target/kernel-test/kernels/`, through an apt configuration of
//! the command's own so the system's sources and package lists stay untouched. Nothing is
//! installed on the host's boot: a kernel package is only unpacked (`dpkg-deb -x`).
//!
//! The host packages come from the system's own sources plus its release's backports (as a
//! private sources file beside the system's): where the machine already has a QEMU tool from
//! backports (`qemu-utils`), the stable `qemu-system-x86` conflicts with it and apt would
//! remove it; with backports listed apt picks the matching version and removes nothing. The
//! install is simulated first and refused if it would remove any package.

use std::path::{Path, PathBuf};

use crate::cmd::Cmd;
use crate::rustup;

/// The static target the guest's binaries are built for.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// Where busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The key apt checks Debian's archives with; the archive keyring carries every release's.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel the command boots: the series a user names, and the Debian release carrying it.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    pub series: &'static str,
    pub release: &'static str,
}

/// Every kernel, oldest first: Debian 11, 12 and 13's cloud kernels.
pub const KERNELS: [Kernel; 3] = [
    Kernel {
        series: "5.10",
        release: "bullseye",
    },
    Kernel {
        series: "6.1",
        release: "bookworm",
    },
    Kernel {
        series: "6.12",
        release: "trixie",
    },
];

/// A fetched kernel: its image and its package version.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub kernel: Kernel,
    pub vmlinuz: PathBuf,
    pub package: String,
}

/// The root of everything the command keeps: `target/kernel-test`.
pub fn work_dir() -> PathBuf {
    crate::project_root().join("target/kernel-test")
}

/// Installs QEMU and busybox-static (apt) and the musl target (rustup) where missing.
pub fn ensure_tools() -> Result<(), String> {
    rustup::ensure_targets(&[MUSL])?;
    let has_qemu = Cmd::new("qemu-system-x86_64", &["--version"])
        .query()
        .is_some();
    if has_qemu && Path::new(BUSYBOX).exists() {
        return Ok(());
    }
    let packages = ["qemu-system-x86", "busybox-static"];
    let howto = "install qemu-system-x86 and busybox-static (Debian and Ubuntu package names)";
    install_packages(&packages, howto)
}

/// Installs the Debian `packages` with apt (from the system's mirror and its backports),
/// refusing where that would remove a package; `howto` says what to do by hand where this
/// is not a root apt host.
pub fn install_packages(packages: &[&str], howto: &str) -> Result<(), String> {
    if Cmd::new("apt-get", &["--version"]).query().is_none() || !is_root() {
        return Err(format!(
            "{} missing and this is not a root apt host: {howto}",
            packages.join(" and ")
        ));
    }
    let apt = private_apt(&work_dir().join("apt-host"), &backports_line()?, true)?;
    apt_cmd("apt-get", &apt).args(&["update"]).run()?;
    let install = ["install", "--no-install-recommends", "-y"];
    let simulated = apt_cmd("apt-get", &apt)
        .args(&install)
        .args(&["-s"])
        .args(packages)
        .run_for_output()?;
    let removed: Vec<&str> = simulated
        .lines()
        .filter(|l| l.starts_with("Remv "))
        .collect();
    if !removed.is_empty() {
        return Err(format!(
            "installing {} would remove packages ({}); {howto} by hand",
            packages.join(" "),
            removed.join("; ")
        ));
    }
    apt_cmd("apt-get", &apt).args(&install).args(packages).run()
}

fn is_root() -> bool {
    Cmd::new("id", &["-u"])
        .query()
        .is_some_and(|id| id.trim() == "0")
}

/// The system's Debian mirror (the first `.../debian` URI its apt sources name), else
/// deb.debian.org.
fn mirror() -> String {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sources") || name.ends_with(".list") {
                texts.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    let uri = texts
        .iter()
        .flat_map(|text| text.split_whitespace())
        .find(|word| word.starts_with("http") && word.trim_end_matches('/').ends_with("/debian"));
    uri.unwrap_or("http://deb.debian.org/debian")
        .trim_end_matches('/')
        .to_owned()
}

/// The sources line for this host's release's backports (`VERSION_CODENAME` in os-release).
fn backports_line() -> Result<String, String> {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os_release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .ok_or("/etc/os-release names no VERSION_CODENAME: install QEMU and busybox by hand")?;
    Ok(format!(
        "deb [signed-by={KEYRING}] {} {codename}-backports main\n",
        mirror()
    ))
}

/// apt options that read `sources` (written to `dir/sources.list`) and keep package lists
/// and downloads under `dir`. `with_system`: the system's own source parts are read too (for
/// installs); otherwise only `sources` (for kernels of other releases).
fn private_apt(dir: &Path, sources: &str, with_system: bool) -> Result<Vec<String>, String> {
    if !Path::new(KEYRING).exists() {
        return Err(format!(
            "{KEYRING} is missing: install debian-archive-keyring (apt checks Debian's \
             signatures with it)"
        ));
    }
    for sub in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let list = dir.join("sources.list");
    std::fs::write(&list, sources).map_err(|e| format!("{}: {e}", list.display()))?;
    let mut options = vec![
        format!("Dir::Etc::SourceList={}", list.display()),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
        format!("Dir::Cache={}", dir.join("cache").display()),
        // Downloads land in the command's own directories, which apt's `_apt` user may not
        // reach; and the AppStream metadata is not needed.
        "APT::Sandbox::User=root".to_owned(),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_owned(),
    ];
    if !with_system {
        options.push("Dir::Etc::SourceParts=/dev/null".to_owned());
    }
    Ok(options
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect())
}

/// `program` (apt-get, apt-cache) with the options [`private_apt`] made.
fn apt_cmd(program: &str, options: &[String]) -> Cmd {
    let words: Vec<&str> = options.iter().map(String::as_str).collect();
    Cmd::new(program, &words)
}

/// The kernels in `wanted`, each fetched and unpacked once; a kernel already in the cache is
/// used without asking apt (`update`: ask apt anyway, and fetch a newer package if any).
pub fn fetch_kernels(wanted: &[Kernel], update: bool) -> Result<Vec<Fetched>, String> {
    let cache = work_dir().join("kernels");
    let cached = |kernel: &Kernel| cached(&cache.join(kernel.series), *kernel);
    let missing: Vec<Kernel> = wanted
        .iter()
        .filter(|kernel| update || cached(kernel).is_none())
        .copied()
        .collect();
    if !missing.is_empty() {
        download(&cache, &missing)?;
    }
    wanted
        .iter()
        .map(|kernel| {
            cached(kernel).ok_or_else(|| format!("Linux {} was not unpacked", kernel.series))
        })
        .collect()
}

/// The unpacked kernel in `dir`, if a run has put it there.
fn cached(dir: &Path, kernel: Kernel) -> Option<Fetched> {
    let package = std::fs::read_to_string(dir.join("package")).ok()?;
    let vmlinuz = dir.join("vmlinuz");
    vmlinuz.exists().then(|| Fetched {
        kernel,
        vmlinuz,
        package: package.trim().to_owned(),
    })
}

/// Resolves each kernel's newest cloud image through the metapackage, downloads it and
/// unpacks its `vmlinuz` into `cache/<series>/`.
fn download(cache: &Path, kernels: &[Kernel]) -> Result<(), String> {
    let mirror = mirror();
    let security = mirror.replace("/debian", "/debian-security");
    let mut sources = String::new();
    for kernel in kernels {
        let release = kernel.release;
        sources += &format!("deb [signed-by={KEYRING}] {mirror} {release} main\n");
        sources += &format!("deb [signed-by={KEYRING}] {security} {release}-security main\n");
    }
    let apt = private_apt(&cache.join("apt"), &sources, false)?;
    apt_cmd("apt-get", &apt).args(&["update"]).run()?;
    let shown = apt_cmd("apt-cache", &apt)
        .args(&["show", "linux-image-cloud-amd64"])
        .run_for_output()?;
    for kernel in kernels {
        let (name, version) = newest_image(&shown, kernel.series)
            .ok_or_else(|| format!("no linux-image-cloud-amd64 of Linux {}", kernel.series))?;
        unpack(cache, &apt, *kernel, &format!("{name}={version}"))?;
    }
    Ok(())
}

/// Downloads package `pinned` (`name=version`) and unpacks its kernel image.
fn unpack(cache: &Path, apt: &[String], kernel: Kernel, pinned: &str) -> Result<(), String> {
    let dir = cache.join(kernel.series);
    let (name, version) = pinned.split_once('=').expect("name=version");
    if cached(&dir, kernel).is_some_and(|fetched| fetched.package == pinned) {
        return Ok(());
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    apt_cmd("apt-get", apt)
        .args(&["download", pinned])
        .dir(&debs)
        .run()?;
    // apt writes the epoch's colon as %3a; the kernel packages have no epoch.
    let deb = debs.join(format!("{name}_{version}_amd64.deb"));
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let (deb_arg, root_arg) = (deb.to_string_lossy(), root.to_string_lossy());
    Cmd::new("dpkg-deb", &["-x", &deb_arg, &root_arg]).run()?;
    let image = name.replacen("linux-image-", "vmlinuz-", 1);
    let from = root.join("boot").join(image);
    std::fs::copy(&from, dir.join("vmlinuz")).map_err(|e| format!("{}: {e}", from.display()))?;
    std::fs::remove_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    std::fs::write(dir.join("package"), pinned).map_err(|e| e.to_string())
}

/// The image package (`linux-image-6.1.0-57-cloud-amd64`) and version the newest
/// `linux-image-cloud-amd64` of `series` depends on, from `apt-cache show`'s stanzas.
fn newest_image(shown: &str, series: &str) -> Option<(String, String)> {
    let prefix = format!("{series}.");
    let mut best: Option<(Vec<u64>, String, String)> = None;
    for stanza in shown.split("\n\n") {
        let field = |key: &str| stanza.lines().find_map(|line| line.strip_prefix(key));
        let (Some(version), Some(depends)) = (field("Version: "), field("Depends: ")) else {
            continue;
        };
        if !version.starts_with(&prefix) {
            continue;
        }
        let image = depends
            .split(',')
            .map(str::trim)
            .find(|dep| dep.starts_with("linux-image-"))?;
        let (name, pin) = image.split_once(" (= ")?;
        let key = version_key(version);
        if best.as_ref().is_none_or(|(best_key, ..)| *best_key < key) {
            best = Some((key, name.to_owned(), pin.trim_end_matches(')').to_owned()));
        }
    }
    best.map(|(_, name, version)| (name, version))
}

/// A Debian version's numbers, for comparing kernel package versions (no epochs or tildes).
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_image_of_a_series_is_picked_from_apt_cache_show() {
        let shown = "Package: linux-image-cloud-amd64\nVersion: 6.1.176-1\n\
            Depends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)\n\n\
            Package: linux-image-cloud-amd64\nVersion: 6.12.118-1\n\
            Depends: linux-image-6.12.118+deb13-cloud-amd64 (= 6.12.118-1)\n\n\
            Package: linux-image-cloud-amd64\nVersion: 6.1.192-3\n\
            Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)\n";
        let pick = |series| newest_image(shown, series);
        let expected = (
            "linux-image-6.1.0-57-cloud-amd64".into(),
            "6.1.192-3".into(),
        );
        assert_eq!(pick("6.1"), Some(expected));
        let trixie = pick("6.12").unwrap();
        assert_eq!(trixie.0, "linux-image-6.12.118+deb13-cloud-amd64");
        assert_eq!(pick("5.10"), None);
    }
}
