//! `cargo xtask kernel-test`'s guest: the static test binaries, an initramfs holding them with
//! busybox and a generated job script, and one QEMU boot per kernel that runs the whole job.
//!
//! The binaries sit in the initramfs at the very paths cargo built them at, so what they find
//! by path works in the guest as on the host: echo-server's tests start the server through
//! `CARGO_BIN_EXE_echo-server` (a path fixed at compile time), and the examples' tests look
//! for the examples beside their own binary. The archive is written here (newc cpio,
//! uncompressed: the kernel unpacks it faster than it inflates a gzip under emulation).
//!
//! The serial console is the only channel out: the guest's `/init` prints
//! `KMATRIX_RUN <run>` before each binary run and `KMATRIX_RC <run> <status> <start> <end>`
//! after it, `KMATRIX_HANG <run>` (with the stuck tasks' kernel stacks and the rings'
//! `fdinfo`) when a run outlives its limit and is killed, and `KMATRIX_EXIT=<status>` last.
//! A run without its markers is a failure: the parser never assumes success.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cmd::Cmd;
use crate::kernel_host::{BUSYBOX, MUSL};
use crate::kernel_report;

/// The guest's `/init`: mounts, loopback up, the job, the exit marker, then a reboot that
/// QEMU's `-no-reboot` turns into its exit.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
ip link set lo up
echo "KMATRIX_BEGIN $(uname -r) nofile=$(ulimit -n) memlock=$(ulimit -l) cpus=$(nproc)"
rc=0

# The pids of $1's children.
children() {
    grep -l "^PPid:[[:space:]]*$1\$" /proc/[0-9]*/status 2>/dev/null | cut -d/ -f3
}

# What a stuck process and its children wait on: each task's kernel stack, and each ring's
# fdinfo (its queued and unreaped entries).
dump() {
    for p in $1 $(children $1); do
        echo "KMATRIX_DUMP process $p: $(tr '\0' ' ' </proc/$p/cmdline | cut -c1-160)"
        for t in /proc/$p/task/*; do
            echo "KMATRIX_DUMP task ${t##*/} $(cat $t/comm) $(grep State $t/status)"
            sed 's/^/KMATRIX_DUMP     /' $t/stack 2>/dev/null
        done
        for f in /proc/$p/fd/*; do
            l=$(readlink $f)
            echo "KMATRIX_DUMP fd ${f##*/} -> $l"
            case $l in *io_uring*) sed 's/^/KMATRIX_DUMP     /' /proc/$p/fdinfo/${f##*/} ;; esac
        done
    done
}

# run NAME LIMIT_S PROGRAM ARGS...: one binary run between markers, killed after LIMIT_S.
run() {
    name=$1 limit=$2
    shift 2
    echo "KMATRIX_RUN $name"
    start=$(cut -d' ' -f1 /proc/uptime)
    "$@" &
    pid=$!
    ( sleep $limit; echo "KMATRIX_HANG $name"; dump $pid; kill -9 $pid ) &
    watcher=$!
    wait $pid
    r=$?
    kill $watcher 2>/dev/null
    echo "KMATRIX_RC $name $r $start $(cut -d' ' -f1 /proc/uptime)"
    [ $r = 0 ] || rc=1
}

. /kmatrix/job.sh
echo "KMATRIX_EXIT=$rc"
reboot -f
"#;

/// A binary cargo built: its package, its target's name and kind, and its path.
#[derive(Debug, Clone)]
pub struct Built {
    pub package: String,
    pub target: String,
    pub path: PathBuf,
}

/// Builds the test binaries and examples statically and returns every executable.
pub fn build(release: bool) -> Result<Vec<Built>, String> {
    let mut common = vec!["--target", MUSL, "--message-format=json-render-diagnostics"];
    if release {
        common.push("--release");
    }
    let packages = [
        "-p",
        "sys-uring",
        "-p",
        "dispatch-loop",
        "-p",
        "dispatch-net",
    ];
    let tests = Cmd::cargo(&["test", "--no-run"])
        .args(&common)
        .args(&packages)
        .args(&["-p", "dispatch-echo", "-p", "examples"])
        .args(&[
            "--test",
            "it",
            "--test",
            "runnable",
            "--test",
            "echo_minimal",
        ])
        .run_for_output()?;
    let examples = Cmd::cargo(&["build", "--examples"])
        .args(&common)
        .args(&["-p", "dispatch-loop", "-p", "examples"])
        .run_for_output()?;
    let built: Vec<Built> = format!("{tests}{examples}")
        .lines()
        .filter_map(built)
        .collect();
    Ok(built)
}

/// The executable a line of cargo's JSON messages reports, if any.
fn built(line: &str) -> Option<Built> {
    let path = json_str(line, "executable")?;
    let package_id = json_str(line, "package_id")?;
    let target = &line[line.find("\"target\":")?..];
    // `path+file:///work/crates/sys-uring#0.1.0`: the directory names the package, unless
    // the package is named otherwise: `path+file:///work/crates/dispatch-core#dispatch-loop@0.1.0`.
    let (url, fragment) = package_id.split_once('#')?;
    let package = match fragment.split_once('@') {
        Some((name, _version)) => name,
        None => url.rsplit('/').next()?,
    };
    Some(Built {
        package: package.to_owned(),
        target: json_str(target, "name")?.to_owned(),
        path: PathBuf::from(path),
    })
}

/// The first string value of `key` in a line of JSON (no escapes in the values read here).
fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// Writes the initramfs: busybox, `/init`, `job` as `/kmatrix/job.sh`, and each binary in
/// `binaries` at its own path with its debug information stripped (a third of the size;
/// panics still name their file and line).
pub fn initramfs(out: &Path, binaries: &[&Path], job: &str) -> Result<(), String> {
    let stripped = out.with_extension("bin");
    let _ = std::fs::remove_dir_all(&stripped);
    std::fs::create_dir_all(&stripped).map_err(|e| format!("{}: {e}", stripped.display()))?;
    let mut cpio = Cpio::default();
    for dir in ["/proc", "/sys", "/dev", "/tmp", "/kmatrix"] {
        cpio.dir(dir);
    }
    cpio.console();
    cpio.file("/init", INIT.as_bytes(), 0o755);
    cpio.file("/kmatrix/job.sh", job.as_bytes(), 0o644);
    let busybox = read(Path::new(BUSYBOX))?;
    cpio.file(BUSYBOX, &busybox, 0o755);
    for (idx, binary) in binaries.iter().enumerate() {
        let copy = stripped.join(idx.to_string());
        let (from, to) = (binary.to_string_lossy(), copy.to_string_lossy());
        Cmd::new("objcopy", &["--strip-debug", &from, &to]).run()?;
        cpio.file(&from, &read(&copy)?, 0o755);
    }
    let bytes = cpio.finish();
    std::fs::write(out, bytes).map_err(|e| format!("{}: {e}", out.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A newc cpio archive (the initramfs format), built in memory.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    dirs: Vec<String>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        assert!(name.starts_with('/'), "{name}: an absolute path");
        self.inode += 1;
        let name = &name[1..];
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(data.len()).expect("a file under 4 GiB"),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("a short name"),
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// `path` and every directory above it, each once.
    fn dir(&mut self, path: &str) {
        let mut at = 0;
        while let Some(next) = path[at + 1..].find('/').map(|i| i + at + 1) {
            self.dir(&path[..next]);
            at = next;
        }
        if !self.dirs.iter().any(|dir| dir == path) {
            self.dirs.push(path.to_owned());
            self.entry(path, 0o040_755, (0, 0), &[]);
        }
    }

    /// `/dev/console`, so that the kernel can give `/init` its console before devtmpfs.
    fn console(&mut self) {
        self.entry("/dev/console", 0o020_600, (5, 1), &[]);
    }

    fn file(&mut self, path: &str, data: &[u8], permissions: u32) {
        if let Some((parent, _)) = path.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
            self.dir(parent);
        }
        self.entry(path, 0o100_000 | permissions, (0, 0), data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("/TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }
}

/// How to boot one kernel.
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    /// Where the serial console's lines go.
    pub log: &'a Path,
    /// `-accel kvm` rather than `tcg`.
    pub kvm: bool,
    /// QEMU is killed after this long.
    pub limit: Duration,
}

/// Boots `boot`'s kernel and returns the console's lines (also written to `boot.log`); lines
/// with a marker or a failure are echoed as they come, prefixed with `prefix`.
pub fn boot(boot: &Boot, prefix: &str) -> Result<Vec<String>, String> {
    let accel = if boot.kvm { "kvm" } else { "tcg,thread=multi" };
    let (kernel, initrd) = (
        boot.vmlinuz.to_string_lossy(),
        boot.initramfs.to_string_lossy(),
    );
    let cpu = if boot.kvm { "host" } else { "max" };
    let qemu = Cmd::new("qemu-system-x86_64", &["-accel", accel, "-cpu", cpu])
        .args(&[
            "-m", "2G", "-smp", "2", "-display", "none", "-monitor", "none",
        ])
        .args(&["-serial", "stdio", "-no-reboot", "-net", "none"])
        .args(&["-kernel", &kernel, "-initrd", &initrd])
        .args(&["-append", "console=ttyS0 panic=-1 quiet"]);
    let mut child = qemu.spawn_piped()?;
    let (sender, lines) = mpsc::channel();
    forward(child.stdout.take().expect("piped"), sender.clone());
    forward(child.stderr.take().expect("piped"), sender);
    let mut log = std::fs::File::create(boot.log).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + boot.limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if let Some(progress) = progress(&line) {
                    eprintln!("{prefix}{progress}");
                }
                let fatal = line.contains("KVM internal error");
                seen.push(line);
                if fatal {
                    stop(&mut child, &mut seen, "QEMU reported a KVM internal error");
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let why = format!("QEMU ran past {} s and was killed", boot.limit.as_secs());
                stop(&mut child, &mut seen, &why);
                break;
            }
        }
    }
    let _ = child.wait();
    Ok(seen)
}

/// Kills QEMU and records why in the lines, as the host's own marker.
fn stop(child: &mut Child, seen: &mut Vec<String>, why: &str) {
    let _ = child.kill();
    seen.push(format!("KMATRIX_HOST {why}"));
}

/// Sends `stream`'s lines, without carriage returns and terminal escapes, to `sender`.
fn forward(stream: impl std::io::Read + Send + 'static, sender: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line);
            if sender.send(clean(&text)).is_err() {
                break;
            }
        }
    });
}

/// `text` without `\r` and without ANSI escape sequences (`ESC [ ... letter`).
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// What a console line shows while the VM runs: markers, kernel trouble, and libtest's
/// failures, slow tests and results (condensed from its JSON).
fn progress(line: &str) -> Option<String> {
    let field = |key| kernel_report::json_field(line, key);
    if line.starts_with("KMATRIX_") || line.contains("Kernel panic") {
        return Some(line.to_owned());
    }
    let head = line.split("\"stdout\":").next().unwrap_or(line);
    match kernel_report::json_field(head, "event")?.as_str() {
        "failed" if field("type").as_deref() == Some("test") => {
            let output = field("stdout").unwrap_or_default();
            let panic = output.lines().filter(|l| !l.is_empty()).take(3);
            let panic: Vec<&str> = panic.collect();
            Some(format!("FAILED {}: {}", field("name")?, panic.join(" / ")))
        }
        "timeout" => Some(format!("running for over 60 s: {}", field("name")?)),
        "ok" | "failed" if field("type").as_deref() == Some("suite") => {
            Some(head.trim().to_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_messages_name_each_executable_with_its_package_and_target() {
        let line = concat!(
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/"#,
            r#"dispatch-loop#0.1.0","target":{"kind":["test"],"name":"it","src_path":"/w/x"},"#,
            r#""executable":"/w/target/debug/deps/it-1","fresh":true}"#
        );
        let built = built(line).unwrap();
        assert_eq!(built.package, "dispatch-loop");
        assert_eq!(built.target, "it");
        assert_eq!(built.path, Path::new("/w/target/debug/deps/it-1"));
        assert!(super::built(r#"{"reason":"build-finished","success":true}"#).is_none());
        // A package named otherwise than its directory.
        let renamed = line.replace("dispatch-loop#0.1.0", "dispatch-core#dispatch-loop@0.1.0");
        assert_eq!(super::built(&renamed).unwrap().package, "dispatch-loop");
    }

    #[test]
    fn console_lines_lose_carriage_returns_and_escapes() {
        assert_eq!(clean("\u{1b}[?7lKMATRIX_EXIT=0\r"), "KMATRIX_EXIT=0");
    }

    #[test]
    fn the_archive_lists_each_directory_once_before_its_files() {
        let mut cpio = Cpio::default();
        cpio.file("/a/b/c", b"x", 0o644);
        cpio.file("/a/b/d", b"yz", 0o755);
        assert_eq!(cpio.dirs, ["/a", "/a/b"]);
        let bytes = cpio.finish();
        assert!(bytes.len().is_multiple_of(4));
        assert!(bytes.starts_with(b"070701"));
    }
}
