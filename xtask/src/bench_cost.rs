//! The loop's own cost (issue 20): user-space instructions per nop, and per plain
//! send-then-receive exchange (a 64-byte `send` and `recv` over a Unix socket pair), through
//! the loop and through a raw io_uring ring, counted by callgrind (valgrind; hardware
//! counters are not available in the VMs this runs on, and instructions, unlike time, do not
//! move with the machine's load). Each figure is the difference between two runs of the
//! `dispatch-loop` example `nop_cost` (`N` and `2N` nops) divided by `N`, so set-up and
//! tear-down cancel out. Reported, never judged: the target (at most 300 per nop through the
//! loop) is a verdict line, like the other benchmarks'.

use std::path::PathBuf;
use std::process::Command;

use crate::cmd::Cmd;

/// The target for a nop through the loop, in user-space instructions (issue 20).
const LOOP_TARGET: f64 = 300.0;

/// The `nop_cost` modes counted, in the table's order.
const MODES: [&str; 4] = ["loop", "raw", "loop-sendrecv", "raw-sendrecv"];

/// Counts and prints the cost table; `quick` counts fewer nops (the figure is the same
/// within a few instructions: the difference removes the fixed costs). A missing valgrind
/// is said and skipped, never passed.
pub fn bench(quick: bool) -> Result<(), String> {
    if let Err(error) = ensure_valgrind() {
        eprintln!("bench cost: SKIPPED: {error}");
        return Ok(());
    }
    let binary = build()?;
    let n: u64 = if quick { 20_000 } else { 100_000 };
    let mut rows = Vec::new();
    for mode in MODES {
        let one = instructions(&binary, mode, n)?;
        let two = instructions(&binary, mode, 2 * n)?;
        let per_op = two.saturating_sub(one) as f64 / n as f64;
        rows.push((mode, per_op));
    }
    let table = render(&rows, n);
    println!("{table}");
    let dir = crate::project_root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("cost.md");
    std::fs::write(&path, &table).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

fn ensure_valgrind() -> Result<(), String> {
    if Cmd::new("valgrind", &["--version"]).query().is_some() {
        return Ok(());
    }
    let howto = "install valgrind (Debian and Ubuntu: `sudo apt-get install valgrind`) and run \
                 `cargo xtask bench --macro-only`";
    crate::kernel_host::install_packages(&["valgrind"], howto)?;
    match Cmd::new("valgrind", &["--version"]).query() {
        Some(_) => Ok(()),
        None => Err(format!("valgrind not found after installing it: {howto}")),
    }
}

/// Builds the `nop_cost` example (release).
fn build() -> Result<PathBuf, String> {
    let args = [
        "build",
        "--release",
        "-p",
        "dispatch-loop",
        "--example",
        "nop_cost",
    ];
    Cmd::cargo(&args).run()?;
    Ok(super::plan::target_dir().join("release/examples/nop_cost"))
}

/// The instructions callgrind counted for `nop_cost MODE N`.
fn instructions(binary: &PathBuf, mode: &str, n: u64) -> Result<u64, String> {
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(binary)
        .args([mode, &n.to_string()])
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "nop_cost {mode} {n} under callgrind failed: {stderr}"
        ));
    }
    collected(&stderr).ok_or_else(|| format!("no `Collected :` line from callgrind: {stderr}"))
}

/// The count in callgrind's `==PID== Collected : N` line.
fn collected(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected :"))
        .and_then(|(_, count)| count.trim().parse().ok())
}

fn render(rows: &[(&str, f64)], n: u64) -> String {
    let mut out = format!(
        "Loop cost (callgrind, user-space instructions per operation; the difference of {n} \
         and {} operations)\n\n| operation | path | instructions |\n|---|---|--:|\n",
        2 * n
    );
    for (mode, per_op) in rows {
        let (operation, path) = label(mode);
        out.push_str(&format!("| {operation} | {path} | {per_op:.0} |\n"));
    }
    if let Some((_, per_nop)) = rows.iter().find(|(mode, _)| *mode == "loop") {
        let verdict = if *per_nop <= LOOP_TARGET {
            "met"
        } else {
            "not met"
        };
        out.push_str(&format!(
            "\nTarget (issue 20): a nop through the loop ≤ {LOOP_TARGET:.0} instructions: \
             {per_nop:.0}, {verdict}\n"
        ));
    }
    out
}

/// A mode's operation and path, for the table.
fn label(mode: &str) -> (&'static str, &'static str) {
    let operation = match mode.ends_with("-sendrecv") {
        true => "64-byte send, then recv (Unix socket pair, 8 in flight)",
        false => "nop (32 in flight)",
    };
    let path = match mode.starts_with("loop") {
        true => "through the loop (io_uring)",
        false => "raw io_uring ring, no loop",
    };
    (operation, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callgrind_count_is_read() {
        let stderr = "==12== Events    : Ir\n==12== Collected : 71149669\n==12==\n";
        assert_eq!(collected(stderr), Some(71_149_669));
        assert_eq!(collected("nothing"), None);
    }

    #[test]
    fn the_table_names_every_mode_and_judges_the_nop() {
        let rows = [("loop", 250.0), ("raw", 54.0), ("loop-sendrecv", 900.0)];
        let table = render(&rows, 10);
        assert!(table.contains("| nop (32 in flight) | through the loop (io_uring) | 250 |"));
        assert!(table.contains("| 64-byte send, then recv"));
        assert!(table.contains("250, met"));
    }
}
