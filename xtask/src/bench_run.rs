//! One macro run: start the server pinned to its CPUs, start the generator pinned to the
//! others, open and close the measured window through the generator's `--control` commands
//! while sampling the server's CPU time in `/proc/PID/stat` at the same instants, count the
//! server's syscalls with `perf` in a second window (so that the tracepoint's cost never
//! touches the first), read its peak RSS, stop both, and read the echo-server's summary.
//! Every wait is bounded; a process that does not answer fails the run, not the machine.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::plan::{Binaries, Plan, Scenario, Server, ServerKind};
use super::proc::kv;
pub use super::proc::{clock_ticks_per_s, cpu_ticks, peak_rss_kib, Proc};
use crate::cmd::Cmd;
use crate::project_root;

/// What one run measured; `failure` set means no number of it may be used.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The server's name.
    pub server: &'static str,
    /// 1-based.
    pub round: u32,
    /// Why the run failed (wrong bytes, a process that did not start, ...).
    pub failure: Option<String>,
    /// Messages (connections, under churn) per second in the window.
    pub msgs_per_s: f64,
    /// Round-trip latency percentiles in the window, µs.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The server's user CPU time per message in the window, µs.
    pub user_us: f64,
    /// The server's kernel CPU time per message in the window, µs.
    pub sys_us: f64,
    /// Syscalls per message counted by `perf` in the second window.
    pub syscalls_perf: Option<f64>,
    /// Syscalls per message by echo-server's own counters, over its whole life.
    pub syscalls_own: Option<f64>,
    /// Peak resident set (VmHWM), KiB.
    pub rss_kib: Option<u64>,
    /// The share of datagrams lost in the window (lost over echoed and lost), UDP only.
    pub lost: Option<f64>,
}

/// Seconds a run costs besides its windows (start, connect, stop), before any was timed.
const OVERHEAD_S: f64 = 1.0;

/// Runs the plan, printing progress (scenario, server, round, time left) on stderr.
pub fn run_all(plan: &Plan, binaries: &Binaries) -> Result<Vec<RunResult>, String> {
    let logs = project_root().join("target/bench/logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let perf = perf_available();
    if !perf {
        eprintln!(
            "bench: `perf stat -e raw_syscalls:sys_enter` does not work here: syscalls per \
             message come from echo-server's own counters only (n/a for peers)"
        );
    }
    // Each server is probed once per transport it runs (its TCP and UDP programs differ).
    let mut probed: Vec<(&str, bool, bool)> = Vec::new();
    for (scenario, server, _) in plan.runs() {
        if !probed
            .iter()
            .any(|p| p.0 == server.name && p.1 == scenario.udp)
        {
            let starts = probe(&scenario, &server, binaries, &logs)?;
            probed.push((server.name, scenario.udp, starts));
        }
    }
    let runs: Vec<_> = plan
        .runs()
        .into_iter()
        .filter(|(scenario, server, _)| probed.contains(&(server.name, scenario.udp, true)))
        .collect();
    let started = Instant::now();
    let guess_s = plan.warmup_s + plan.duration_s + plan.syscall_window_s + OVERHEAD_S;
    let mut results = Vec::new();
    for (n, &(scenario, server, round)) in runs.iter().enumerate() {
        let per_run_s = if n == 0 {
            guess_s
        } else {
            started.elapsed().as_secs_f64() / n as f64
        };
        let left_s = per_run_s * (runs.len() - n) as f64;
        eprintln!(
            "bench [{}/{}] {} {} round {}/{}, about {:.0} s left",
            n + 1,
            runs.len(),
            scenario.name,
            server.name,
            round,
            plan.rounds,
            left_s
        );
        let program =
            program(&scenario, &server, binaries, plan.server_threads).expect("probed above");
        let log = logs.join(format!("{}-{}-{round}.log", scenario.name, server.name));
        let ctx = RunCtx {
            plan,
            scenario,
            server,
            program,
            loadgen: &binaries.loadgen,
            log: &log,
            perf,
        };
        let mut result = run_one(&ctx);
        result.round = round;
        if let Some(failure) = &result.failure {
            eprintln!("bench: FAILED: {failure} (log: {})", log.display());
        }
        results.push(result);
    }
    Ok(results)
}

/// Whether `server` starts here for `scenario`'s transport: a server that needs io_uring
/// where io_uring is blocked (seccomp, `kernel.io_uring_disabled`) is left out with a line
/// saying so; echo-server on epoll and tokio must start.
fn probe(
    scenario: &Scenario,
    server: &Server,
    binaries: &Binaries,
    logs: &Path,
) -> Result<bool, String> {
    let Some(program) = program(scenario, server, binaries, 1) else {
        return Ok(false);
    };
    let transport = if scenario.udp { "-udp" } else { "" };
    let log_path = logs.join(format!("probe-{}{transport}.log", server.name));
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let started = Proc::spawn(pinned(None, &program), log, false).and_then(|mut proc| {
        let line = proc.expect("listening on ", Duration::from_secs(10));
        let _ = proc.stop_with("-KILL");
        line
    });
    let Err(error) = started else {
        return Ok(true);
    };
    let said = std::fs::read_to_string(&log_path).unwrap_or_default();
    let why = format!(
        "{error}: {}",
        said.lines().last().unwrap_or("(nothing on stderr)")
    );
    let needed = matches!(server.name, "echo-epoll" | "tokio");
    if needed {
        return Err(format!("{} does not start: {why}", server.name));
    }
    eprintln!(
        "bench: {} left out: it does not start here: {why}",
        server.name
    );
    Ok(false)
}

/// The server's command line for `scenario`, without pinning; `None` for a peer that did
/// not build or has no form for the scenario's transport.
fn program(
    scenario: &Scenario,
    server: &Server,
    binaries: &Binaries,
    server_threads: u32,
) -> Option<Vec<String>> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    match server.kind {
        ServerKind::Own { backend, args, .. } => {
            let mut program = vec![
                path(&binaries.dispatch_echo),
                "--listen=127.0.0.1:0".into(),
                format!("--threads={server_threads}"),
                format!("--backend={backend}"),
            ];
            if scenario.udp {
                // The same port number serves TCP and UDP: the listening line names both.
                program.push("--udp".into());
            }
            program.extend(args.iter().map(|arg| (*arg).to_string()));
            Some(program)
        }
        ServerKind::Peer { .. } => {
            let dir = server.peer_dir(scenario)?;
            let (_, binary) = binaries.peers.iter().find(|(name, _)| *name == dir)?;
            Some(vec![path(binary), "127.0.0.1:0".into()])
        }
    }
}

/// Everything one run needs.
struct RunCtx<'a> {
    plan: &'a Plan,
    scenario: Scenario,
    server: Server,
    program: Vec<String>,
    loadgen: &'a Path,
    log: &'a Path,
    perf: bool,
}

fn run_one(ctx: &RunCtx) -> RunResult {
    let mut result = RunResult {
        scenario: ctx.scenario.name,
        server: ctx.server.name,
        ..RunResult::default()
    };
    let mut server = match start_server(ctx) {
        Ok(server) => server,
        Err(error) => {
            result.failure = Some(error);
            return result;
        }
    };
    let measured = measure(ctx, &server, &mut result);
    result.rss_kib = peak_rss_kib(server.pid);
    let summary = server.stop_with("-TERM");
    if let Err(error) = measured {
        result.failure = Some(error);
        return result;
    }
    match summary {
        // echo-server counts UDP apart in its summary (issue 21); its UDP lines are not read
        // yet, so a UDP run's figure is perf's alone.
        Ok(lines) if !ctx.scenario.udp => {
            result.syscalls_own = own_syscalls(&lines, ctx.scenario.size)
        }
        Ok(_) => {}
        Err(error) => result.failure = Some(format!("{}: {error}", ctx.server.name)),
    }
    result
}

/// The server, started and listening.
fn start_server(ctx: &RunCtx) -> Result<Proc, String> {
    let log = File::create(ctx.log).map_err(|e| format!("{}: {e}", ctx.log.display()))?;
    let command = pinned(ctx.plan.server_cpus.as_deref(), &ctx.program);
    let mut server = Proc::spawn(command, log, false)?;
    let line = server.expect("listening on ", Duration::from_secs(10));
    match line {
        Ok(line) => {
            server.addr = line.trim_start_matches("listening on ").trim().to_owned();
            Ok(server)
        }
        Err(error) => {
            let _ = server.stop_with("-KILL");
            Err(format!("{} did not start: {error}", ctx.server.name))
        }
    }
}

/// Drives the generator through warm-up, the measured window and the syscall window, and
/// fills `result` from what it and the server's `/proc` files say.
fn measure(ctx: &RunCtx, server: &Proc, result: &mut RunResult) -> Result<(), String> {
    let log = File::options()
        .append(true)
        .open(ctx.log)
        .map_err(|e| e.to_string())?;
    let mut gen = Proc::spawn(loadgen_command(ctx, &server.addr), log, true)?;
    let outcome = windows(ctx, server, &mut gen, result);
    let _ = gen.send("stop");
    let last = gen.expect("status=", Duration::from_secs(30));
    let _ = gen.stop_with("-KILL");
    outcome?;
    let last = last.map_err(|e| format!("loadgen's last line: {e}"))?;
    let field = |key: &str| kv(&last, key).and_then(|v| v.parse::<f64>().ok());
    if kv(&last, "status") != Some("ok") {
        return Err(format!("loadgen: {last} (its errors are in the log)"));
    }
    result.p50_us = field("p50_us").unwrap_or(0.0);
    result.p99_us = field("p99_us").unwrap_or(0.0);
    result.p999_us = field("p999_us").unwrap_or(0.0);
    Ok(())
}

/// The measured window, then the syscall window.
fn windows(
    ctx: &RunCtx,
    server: &Proc,
    gen: &mut Proc,
    result: &mut RunResult,
) -> Result<(), String> {
    let plan = ctx.plan;
    gen.expect("connected", Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs_f64(plan.warmup_s));
    let cpu_start = cpu_ticks(server.pid)?;
    let start = gen.mark("start")?;
    std::thread::sleep(Duration::from_secs_f64(plan.duration_s));
    let cpu_end = cpu_ticks(server.pid)?;
    let end = gen.mark("end")?;
    let messages = end.messages.saturating_sub(start.messages);
    if end.errors > 0 {
        return Err("loadgen reported errors (wrong or missing echoes)".into());
    }
    if ctx.scenario.udp {
        result.lost = Some(lost_share(messages, end.lost.saturating_sub(start.lost)));
    }
    let seconds = end.ns.saturating_sub(start.ns) as f64 / 1e9;
    result.msgs_per_s = messages as f64 / seconds;
    // No message in a short window on a busy machine is not an error (a server that stops
    // echoing makes the generator's reads time out, and that is): the run shows 0 msgs/s
    // and no CPU per message.
    let us_per_tick = 1e6 / clock_ticks_per_s();
    result.user_us = (cpu_end.0 - cpu_start.0) as f64 * us_per_tick / messages as f64;
    result.sys_us = (cpu_end.1 - cpu_start.1) as f64 * us_per_tick / messages as f64;
    if ctx.perf {
        result.syscalls_perf = count_syscalls(ctx, server.pid, gen)?;
    }
    Ok(())
}

fn loadgen_command(ctx: &RunCtx, addr: &str) -> Command {
    let plan = ctx.plan;
    let s = ctx.scenario;
    // A bound on the whole run, past which the generator stops by itself.
    let limit_s = plan.warmup_s + plan.duration_s + plan.syscall_window_s + 60.0;
    // A thread per client CPU, but never more threads than connections (churn has none
    // held open: each thread churns its own).
    let threads = if s.churn {
        plan.client_threads
    } else {
        plan.client_threads.min(s.connections)
    };
    let mut args = vec![
        ctx.loadgen.to_string_lossy().into_owned(),
        format!("--addr={addr}"),
        "--control".into(),
        format!("--duration={limit_s}"),
        format!("--connections={}", s.connections.max(1)),
        format!("--size={}", s.size),
        format!("--depth={}", s.depth),
        format!("--threads={threads}"),
    ];
    if s.churn {
        args.push("--churn".into());
    }
    if s.udp {
        args.push("--udp".into());
    }
    pinned(plan.client_cpus.as_deref(), &args)
}

/// The share of datagrams lost: lost over echoed and lost; 0 where none was sent.
pub fn lost_share(echoed: u64, lost: u64) -> f64 {
    let sent = echoed + lost;
    if sent == 0 {
        return 0.0;
    }
    lost as f64 / sent as f64
}

/// `taskset -c CPUS PROGRAM ARGS` (taskset execs, so the child's pid is the program's).
pub fn pinned(cpus: Option<&str>, program: &[String]) -> Command {
    let mut command = match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]);
            command.arg(&program[0]);
            command
        }
        None => Command::new(&program[0]),
    };
    command.args(&program[1..]);
    command
}

/// Syscalls per message by echo-server's summary, over its whole life: its `syscalls`
/// over the bytes it echoed in `size`-byte messages (its `messages` counts receives). `None`
/// for a peer (no summary).
fn own_syscalls(lines: &[String], size: u32) -> Option<f64> {
    let value = |key: &str| -> Option<f64> {
        let line = lines.iter().find(|line| line.starts_with(key))?;
        line[key.len()..].trim().parse().ok()
    };
    let syscalls = value("syscalls:")?;
    let messages = value("bytes:")? / f64::from(size);
    (messages > 0.0).then(|| syscalls / messages)
}

/// Whether `perf stat` can count the syscall tracepoint here (root or a low
/// `perf_event_paranoid`, tracefs mounted).
fn perf_available() -> bool {
    let args = ["stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"];
    Cmd::new("perf", &args).query().is_some()
}

/// The server's syscalls per message in a window of its own: `perf stat` attached to the
/// server with its counter disabled, enabled through its control FIFO just before the
/// generator's first mark and disabled just after the second.
fn count_syscalls(ctx: &RunCtx, pid: u32, gen: &mut Proc) -> Result<Option<f64>, String> {
    let dir = project_root().join("target/bench/tmp");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (ctl, ack, out) = (
        dir.join("perf-ctl"),
        dir.join("perf-ack"),
        dir.join("perf.csv"),
    );
    for fifo in [&ctl, &ack] {
        let _ = std::fs::remove_file(fifo);
        Cmd::new("mkfifo", &[&fifo.to_string_lossy()])
            .query()
            .ok_or("mkfifo failed")?;
    }
    let _ = std::fs::remove_file(&out);
    // Opened read-write, which on Linux never blocks on a FIFO, before perf opens them.
    let mut ctl_fifo = File::options().read(true).write(true).open(&ctl);
    let ack_fifo = File::options().read(true).write(true).open(&ack);
    let (Ok(ctl_fifo), Ok(ack_fifo)) = (ctl_fifo.as_mut(), ack_fifo) else {
        return Err("opening perf's control FIFOs failed".into());
    };
    let control = format!("fifo:{},{}", ctl.display(), ack.display());
    let log = File::options()
        .append(true)
        .open(ctx.log)
        .map_err(|e| e.to_string())?;
    let args = perf_args(pid, &control, &out);
    let mut perf = Proc::spawn(pinned(ctx.plan.client_cpus.as_deref(), &args), log, false)?;
    let acks = ack_lines(ack_fifo);
    let counted = perf_window(ctx, gen, ctl_fifo, &acks);
    let _ = perf.stop_with("-INT");
    let messages = counted?;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let count = text
        .lines()
        .find(|line| line.contains("raw_syscalls:sys_enter"))
        .and_then(|line| line.split(',').next()?.parse::<f64>().ok());
    Ok(count
        .filter(|_| messages > 0)
        .map(|count| count / messages as f64))
}

fn perf_args(pid: u32, control: &str, out: &Path) -> Vec<String> {
    let words = [
        "perf",
        "stat",
        "-x,",
        "-e",
        "raw_syscalls:sys_enter",
        "-D",
        "-1",
    ];
    let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    args.extend(["--control".into(), control.into(), "-o".into()]);
    args.push(out.to_string_lossy().into_owned());
    args.extend(["-p".into(), pid.to_string()]);
    args
}

/// perf's `ack` answers, one per line, read by a thread so that waits for them are bounded.
fn ack_lines(ack_fifo: File) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(ack_fifo).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Enables the counter, marks, waits the window, marks, disables; the messages in between.
fn perf_window(
    ctx: &RunCtx,
    gen: &mut Proc,
    ctl: &mut File,
    acks: &Receiver<String>,
) -> Result<u64, String> {
    let command = |ctl: &mut File, word: &str| -> Result<(), String> {
        writeln!(ctl, "{word}").map_err(|e| format!("perf control: {e}"))?;
        acks.recv_timeout(Duration::from_secs(10))
            .map(drop)
            .map_err(|_| format!("perf did not acknowledge `{word}` within 10 s"))
    };
    command(ctl, "enable")?;
    let first = gen.mark("mark")?;
    std::thread::sleep(Duration::from_secs_f64(ctx.plan.syscall_window_s));
    let second = gen.mark("mark")?;
    command(ctl, "disable")?;
    if second.errors > 0 {
        return Err("loadgen reported errors (wrong or missing echoes)".into());
    }
    Ok(second.messages.saturating_sub(first.messages))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::plan::{SCENARIOS, SERVERS};
    use super::*;

    fn named<T: Copy>(all: &[T], name: fn(&T) -> &str, wanted: &str) -> T {
        *all.iter().find(|item| name(item) == wanted).expect(wanted)
    }

    #[test]
    fn a_udp_scenario_starts_each_server_in_its_udp_form() {
        let binaries = Binaries {
            dispatch_echo: PathBuf::from("/t/echo-server"),
            loadgen: PathBuf::from("/t/loadgen"),
            peers: vec![
                ("tokio-echo", PathBuf::from("/t/tokio-echo")),
                ("tokio-udp-echo", PathBuf::from("/t/tokio-udp-echo")),
            ],
            echo_udp: true,
        };
        let scenario = |name| named(&SCENARIOS, |s| s.name, name);
        let server = |name| named(&SERVERS, |s| s.name, name);
        let (udp, tcp) = (scenario("udp-64B"), scenario("c100-64B-d1"));
        let uring = program(&udp, &server("echo-uring"), &binaries, 1).unwrap();
        assert_eq!(uring[0], "/t/echo-server");
        assert!(uring.contains(&"--udp".to_owned()), "{uring:?}");
        let uring_tcp = program(&tcp, &server("echo-uring"), &binaries, 1).unwrap();
        assert!(!uring_tcp.contains(&"--udp".to_owned()), "{uring_tcp:?}");
        let tokio = program(&udp, &server("tokio"), &binaries, 1).unwrap();
        assert_eq!(tokio, ["/t/tokio-udp-echo", "127.0.0.1:0"]);
        let tokio_tcp = program(&tcp, &server("tokio"), &binaries, 1).unwrap();
        assert_eq!(tokio_tcp, ["/t/tokio-echo", "127.0.0.1:0"]);
        assert!(program(&udp, &server("monoio"), &binaries, 1).is_none());
    }
}
