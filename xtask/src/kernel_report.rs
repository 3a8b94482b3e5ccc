//! `cargo xtask kernel-test`'s reading of a guest's console: the probe's `KM|key=value`
//! lines, and for each binary run its status, libtest's counts, the tests that printed
//! `skipped:`, the failed tests and their panics, and a hang; then the table the command
//! prints and the markdown table of what the loop uses on each kernel (`docs/KERNELS.md`).
//!
//! Nothing is assumed: a run without libtest's result line, without its `KMATRIX_RC`
//! marker, killed as hung, or with most of its tests skipped fails; so does a kernel whose
//! console lacks `KMATRIX_EXIT`.

use std::fmt::Write as _;

/// One binary run in the guest.
#[derive(Debug, Default, Clone)]
pub struct RunResult {
    pub name: String,
    /// A plain program (the probe), judged by its exit status alone.
    pub plain: bool,
    /// The exit status `KMATRIX_RC` reported; `None` if the marker never came.
    pub status: Option<i32>,
    pub secs: Option<f64>,
    /// libtest's suite counts.
    pub passed: Option<u32>,
    pub failed: Option<u32>,
    /// Tests reported passed one by one: the count that survives a run killed as hung.
    pub passed_events: u32,
    /// Tests that passed having printed `skipped:` (they did not run their check here).
    pub skipped: Vec<String>,
    /// The tests that failed, each with the first lines of its panic.
    pub failures: Vec<(String, String)>,
    /// Killed by the guest's per-run limit.
    pub hung: bool,
    /// Tests started and never finished, and tests libtest reported as running long.
    pub started: Vec<String>,
    pub slow: Vec<String>,
}

impl RunResult {
    /// Why this run fails, or `None` when it passed.
    pub fn trouble(&self) -> Option<String> {
        if self.hung {
            let stuck = if self.started.is_empty() {
                &self.slow
            } else {
                &self.started
            };
            return Some(format!(
                "HUNG, killed at its limit; unfinished: {}",
                stuck.join(", ")
            ));
        }
        let Some(status) = self.status else {
            return Some("no KMATRIX_RC marker: the guest died during the run".to_owned());
        };
        if self.plain {
            return (status != 0).then(|| format!("exit status {status}"));
        }
        let (Some(passed), Some(failed)) = (self.passed, self.failed) else {
            return Some(format!("exit status {status} and no libtest result"));
        };
        if failed > 0 || status != 0 {
            return Some(format!("{failed} FAILED (exit status {status})"));
        }
        if passed == 0 {
            return Some("no test ran (a filter that matches nothing?)".to_owned());
        }
        if self.skipped.len() * 2 > passed as usize {
            let n = self.skipped.len();
            return Some(format!(
                "SKIPPED: {n} of {passed} passing tests only skipped"
            ));
        }
        None
    }
}

/// Everything one kernel's console said.
#[derive(Debug, Default, Clone)]
pub struct KernelResult {
    pub probe: Vec<(String, String)>,
    pub runs: Vec<RunResult>,
    /// `KMATRIX_EXIT`'s value; `None` if it never came.
    pub exit: Option<i32>,
    /// A kernel panic, the host killing QEMU, and the like.
    pub trouble: Vec<String>,
}

impl KernelResult {
    pub fn probed(&self, key: &str) -> &str {
        self.probe
            .iter()
            .find(|(k, _)| k == key)
            .map_or("?", |(_, value)| value)
    }

    pub fn passed(&self) -> bool {
        self.exit == Some(0)
            && self.trouble.is_empty()
            && self.runs.iter().all(|run| run.trouble().is_none())
    }
}

/// Reads a console's lines; the runs named in `plain` are programs, not libtest binaries.
pub fn parse(lines: &[String], plain: &[&str]) -> KernelResult {
    let mut result = KernelResult::default();
    let mut run: Option<RunResult> = None;
    for line in lines {
        if let Some(kv) = line.split_once("KM|").map(|(_, kv)| kv) {
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            result.probe.push((key.to_owned(), value.trim().to_owned()));
        } else if let Some(name) = line.strip_prefix("KMATRIX_RUN ") {
            let name = name.trim().to_owned();
            let plain = plain.contains(&name.as_str());
            run = Some(RunResult {
                name,
                plain,
                ..RunResult::default()
            });
        } else if let Some(rest) = line.strip_prefix("KMATRIX_RC ") {
            if let Some(mut done) = run.take() {
                end_run(&mut done, rest);
                result.runs.push(done);
            }
        } else if let Some(code) = line.strip_prefix("KMATRIX_EXIT=") {
            result.exit = code.trim().parse().ok();
        } else if line.contains("Kernel panic") || line.starts_with("KMATRIX_HOST ") {
            result.trouble.push(line.trim().to_owned());
        } else if let Some(current) = run.as_mut() {
            run_line(current, line);
        }
    }
    if let Some(unfinished) = run {
        result.runs.push(unfinished);
    }
    if result.exit.is_none() {
        result.trouble.push("no KMATRIX_EXIT marker".to_owned());
    }
    result
}

/// `KMATRIX_RC`'s `<name> <status> <start> <end>` (uptimes in seconds).
fn end_run(run: &mut RunResult, rest: &str) {
    // From the end: a name may hold spaces.
    let words: Vec<&str> = rest.split_whitespace().rev().collect();
    run.status = words.get(2).and_then(|s| s.parse().ok());
    let uptime = |i: usize| words.get(i).and_then(|s| s.parse::<f64>().ok());
    if let (Some(start), Some(end)) = (uptime(1), uptime(0)) {
        run.secs = Some(end - start);
    }
}

/// Reads one line of a run's output: libtest's JSON events (`--format json`), and the
/// guest's hang marker.
fn run_line(run: &mut RunResult, line: &str) {
    if line.starts_with("KMATRIX_HANG ") {
        run.hung = true;
        return;
    }
    // The fields before a test's output, so that its output cannot fake one.
    let head = line.split("\"stdout\":").next().unwrap_or(line);
    let Some(event) = json_field(head, "event") else {
        return;
    };
    if json_field(head, "type").as_deref() == Some("suite") {
        let count = |key: &str| number_field(head, key);
        (run.passed, run.failed) = (count("passed"), count("failed"));
        return;
    }
    let Some(name) = json_field(head, "name") else {
        return;
    };
    let output = json_field(line, "stdout").unwrap_or_default();
    match event.as_str() {
        "started" => run.started.push(name),
        "timeout" => run.slow.push(name),
        _ => {
            run.started.retain(|started| *started != name);
            run.passed_events += u32::from(event == "ok");
            if event == "failed" {
                run.failures.push((name, panic_lines(&output)));
            } else if output.contains("skipped: ") {
                run.skipped.push(name);
            }
        }
    }
}

/// The panic in a failed test's output: its `panicked at` line and the two after it.
fn panic_lines(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let Some(at) = lines.iter().position(|line| line.contains("panicked at")) else {
        return lines
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join(" / ");
    };
    lines[at..lines.len().min(at + 3)].join(" / ")
}

/// A string field of a line of libtest's JSON, unescaped.
pub fn json_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\": \""))? + key.len() + 5;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16).ok()?;
                    out.push(char::from_u32(code).unwrap_or('?'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn number_field(line: &str, key: &str) -> Option<u32> {
    let start = line.find(&format!("\"{key}\": "))? + key.len() + 4;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One line saying what the probe found: the backend the loop picks, what it uses there,
/// what it stepped down from, and the kernel's opcode count.
pub fn probe_summary(kernel: &KernelResult) -> String {
    let p = |key| kernel.probed(key);
    if p("io_uring") != "ok" {
        return format!("io_uring {}; loop {}", p("io_uring"), p("loop.auto"));
    }
    let used = uses(kernel, &FEATURES);
    let stepped = match p("loop.stepped_down") {
        "" | "?" => String::new(),
        names => format!("; stepped down from {names}"),
    };
    let missing = match p("opcodes.loop_missing") {
        "" => String::new(),
        names => format!(", lacks {names}"),
    };
    format!(
        "loop: {}{}; uses: {}{stepped}; {} opcodes{missing}",
        p("loop.auto"),
        fallback_note(kernel),
        if used.is_empty() {
            "none".to_owned()
        } else {
            used.join(" ")
        },
        p("opcodes.supported"),
    )
}

/// The io_uring features the loop reports in `Stats::uring`, with their kernel names.
const FEATURES: [(&str, &str); 8] = [
    ("single_issuer", "SINGLE_ISSUER"),
    ("defer_taskrun", "DEFER_TASKRUN"),
    ("coop_taskrun", "COOP_TASKRUN"),
    ("submit_all", "SUBMIT_ALL"),
    ("ext_arg", "EXT_ARG"),
    ("min_timeout", "MIN_TIMEOUT"),
    ("pbuf_ring", "pbuf-ring"),
    ("multishot", "multishot"),
];

/// The names in `features` the loop uses on `kernel`.
fn uses(kernel: &KernelResult, features: &[(&str, &'static str)]) -> Vec<&'static str> {
    let used = |key: &&str| kernel.probed(&format!("loop.uses.{key}")) == "yes";
    features
        .iter()
        .filter(|(key, _)| used(key))
        .map(|(_, name)| *name)
        .collect()
}

fn fallback_note(kernel: &KernelResult) -> String {
    match kernel.probed("loop.auto_fallback") {
        "" | "?" => String::new(),
        why => format!(" ({why})"),
    }
}

/// The final table: per kernel its probe line, then one row per run.
pub fn table(kernels: &[(String, f64, KernelResult)]) -> String {
    let mut out = String::new();
    let header = ["run", "passed", "failed", "skipped", "time", "verdict"];
    for (label, wall_s, kernel) in kernels {
        let verdict = if kernel.passed() { "passed" } else { "FAILED" };
        let _ = writeln!(out, "\n{label}: {verdict}, {wall_s:.0} s in the VM");
        let _ = writeln!(out, "  probe: {}", probe_summary(kernel));
        for trouble in &kernel.trouble {
            let _ = writeln!(out, "  !! {trouble}");
        }
        let _ = writeln!(
            out,
            "  {:<20} {:>6} {:>6} {:>7} {:>7}  {}",
            header[0], header[1], header[2], header[3], header[4], header[5]
        );
        for run in &kernel.runs {
            let _ = writeln!(out, "{}", row(run));
        }
    }
    out
}

fn row(run: &RunResult) -> String {
    let number = |n: Option<u32>| n.map_or("-".to_owned(), |n| n.to_string());
    // A run killed before libtest's summary: the tests that passed before it.
    let passed = run
        .passed
        .or((run.passed_events > 0).then_some(run.passed_events));
    let failed = run
        .failed
        .or((!run.failures.is_empty()).then_some(run.failures.len() as u32));
    let secs = run.secs.map_or("-".to_owned(), |s| format!("{s:.1}s"));
    let verdict = run.trouble().unwrap_or_else(|| "ok".to_owned());
    let mut row = format!(
        "  {:<20} {:>6} {:>6} {:>7} {:>7}  {verdict}",
        run.name,
        number(passed),
        number(failed),
        run.skipped.len(),
        secs,
    );
    for (test, panic) in &run.failures {
        let _ = write!(row, "\n      FAILED {test}: {}", shorten(panic, 400));
    }
    row
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// A row of the docs table: its label and how to read it from a kernel's probe.
type DocRow = (&'static str, fn(&KernelResult) -> String);

/// The rows of the docs table.
const DOC_ROWS: [DocRow; 10] = [
    ("Backend chosen automatically", |k| {
        format!("{}{}", k.probed("loop.auto"), fallback_note(k))
    }),
    ("`Options::new` on forced io_uring", |k| {
        k.probed("loop.io_uring").to_owned()
    }),
    ("Set-up flags the loop uses", |k| {
        setup_flags(k, "loop.uses.")
    }),
    ("Set-up flags stepped down from", |k| {
        match k.probed("loop.stepped_down") {
            "" => "none".to_owned(),
            names => names.replace("IORING_SETUP_", "").replace(',', ", "),
        }
    }),
    ("Set-up flags the kernel accepts", |k| {
        setup_flags(k, "setup.")
    }),
    ("Waits with a timeout", |k| {
        pick(k, "ext_arg", "`EXT_ARG`", "a timeout SQE")
    }),
    ("Batch wait (`batch_wait_us`)", |k| {
        pick(k, "min_timeout", "`MIN_TIMEOUT`", "off (no `MIN_TIMEOUT`)")
    }),
    ("Pooled receives", |k| {
        pick(k, "pbuf_ring", "provided-buffer ring", "the loop's pool")
    }),
    ("Multishot receive and accept", |k| {
        pick(k, "multishot", "the kernel's", "re-armed by the loop")
    }),
    ("Opcodes (the loop's missing)", |k| {
        let missing = k.probed("opcodes.loop_missing");
        let missing = if missing.is_empty() { "none" } else { missing };
        format!("{} ({missing})", k.probed("opcodes.supported"))
    }),
];

/// The set-up flags `prefix` (`setup.`: the kernel accepts; `loop.uses.`: the loop uses).
fn setup_flags(kernel: &KernelResult, prefix: &str) -> String {
    let names = [
        "single_issuer",
        "defer_taskrun",
        "coop_taskrun",
        "submit_all",
    ];
    let on: Vec<String> = names
        .iter()
        .filter(|name| kernel.probed(&format!("{prefix}{name}")) == "yes")
        .map(|name| format!("`{}`", name.to_uppercase()))
        .collect();
    if kernel.probed(&format!("{prefix}single_issuer")) == "?" {
        return "-".to_owned();
    }
    if on.is_empty() {
        return "none".to_owned();
    }
    on.join(", ")
}

/// What the loop uses for feature `key` (`loop.uses.<key>`): `yes` or `no`.
fn pick(kernel: &KernelResult, key: &str, yes: &str, no: &str) -> String {
    match kernel.probed(&format!("loop.uses.{key}")) {
        "yes" => yes.to_owned(),
        "no" => no.to_owned(),
        _ => "-".to_owned(),
    }
}

/// The markdown table of what the loop uses on each kernel (columns: `kernels`' labels).
pub fn markdown(kernels: &[(String, KernelResult)]) -> String {
    let mut out = String::from("| | ");
    let labels: Vec<String> = kernels.iter().map(|(label, _)| label.clone()).collect();
    let _ = writeln!(out, "{} |", labels.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(kernels.len()));
    for (label, read) in DOC_ROWS {
        let cells: Vec<String> = kernels
            .iter()
            .map(|(_, k)| read(k).replace('|', "/"))
            .collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_run_reports_counts_skips_failures_and_panics() {
        let console = lines(concat!(
            "KM|io_uring=ok\nKMATRIX_RUN core auto\n",
            r#"{ "type": "test", "event": "started", "name": "a" }"#,
            "\n",
            r#"{ "type": "test", "name": "a", "event": "ok", "stdout": "skipped: no ring\n" }"#,
            "\n",
            r#"{ "type": "test", "name": "b", "event": "failed", "stdout": "#,
            r#""thread 'b' panicked at x.rs:3:5:\nassertion \"x\" failed\n" }"#,
            "\n",
            r#"{ "type": "suite", "event": "failed", "passed": 3, "failed": 1 }"#,
            "\nKMATRIX_RC core auto 101 1.50 4.00\nKMATRIX_EXIT=1",
        ));
        let kernel = parse(&console, &[]);
        assert_eq!(kernel.probed("io_uring"), "ok");
        let run = &kernel.runs[0];
        assert_eq!((run.passed, run.failed), (Some(3), Some(1)));
        assert_eq!(run.skipped, ["a"]);
        assert_eq!(run.failures[0].0, "b");
        assert!(run.failures[0].1.ends_with("assertion \"x\" failed"));
        assert_eq!(run.status, Some(101));
        assert_eq!(run.secs, Some(2.5));
        assert!(run.started.is_empty());
        assert!(!kernel.passed());
    }

    #[test]
    fn missing_markers_hangs_and_all_skipped_runs_fail() {
        let kernel = parse(&lines("KMATRIX_RUN x\n"), &[]);
        assert!(kernel.runs[0].trouble().unwrap().contains("no KMATRIX_RC"));
        assert_eq!(kernel.trouble, ["no KMATRIX_EXIT marker"]);
        let hung = parse(
            &lines(concat!(
                "KMATRIX_RUN x\n",
                r#"{ "type": "test", "event": "started", "name": "t" }"#,
                "\nKMATRIX_HANG x\nKMATRIX_RC x 137 0 9"
            )),
            &[],
        );
        assert!(hung.runs[0].trouble().unwrap().ends_with("unfinished: t"));
        let skipped = parse(
            &lines(concat!(
                "KMATRIX_RUN x\n",
                r#"{ "type": "test", "name": "a", "event": "ok", "stdout": "skipped: a" }"#,
                "\n",
                r#"{ "type": "suite", "event": "ok", "passed": 1, "failed": 0 }"#,
                "\nKMATRIX_RC x 0 0 1\nKMATRIX_EXIT=0",
            )),
            &[],
        );
        assert!(skipped.runs[0].trouble().unwrap().starts_with("SKIPPED"));
        let plain = parse(
            &lines("KMATRIX_RUN p\nKMATRIX_RC p 0 0 1\nKMATRIX_EXIT=0"),
            &["p"],
        );
        assert!(plain.passed());
    }
}
