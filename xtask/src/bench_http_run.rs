//! One HTTP run: start the server pinned to the server CPUs on a free port, wait until it
//! listens, check its answers (`bench_http_check.rs`), run wrk once to warm up, then the
//! measured wrk run with the server's CPU time read from `/proc/PID/stat` just before wrk
//! starts and just after it ends, read its peak RSS, and stop it with SIGTERM. wrk's own
//! counts give requests/s and latency; any socket error or non-2xx response it counts fails
//! the run. Every wait is bounded; a process that does not answer fails the run.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use super::http::{Binaries, Plan, Scenario, Server, ServerKind, PATH};
use super::http_check;
use super::run::{clock_ticks_per_s, cpu_ticks, peak_rss_kib, pinned, Proc};
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
    /// Why the run failed (wrong answers, wrk's errors, a process that did not start, ...).
    pub failure: Option<String>,
    /// Responses wrk counted in the measured run.
    pub requests: u64,
    /// wrk's requests per second.
    pub requests_per_s: f64,
    /// wrk's latency percentiles, µs; `None` under pipelining (see `latency`).
    pub p50_us: Option<f64>,
    /// 99th.
    pub p99_us: Option<f64>,
    /// The server's user CPU time per request over the measured wrk run, µs.
    pub user_us: f64,
    /// The server's kernel CPU time per request, µs.
    pub sys_us: f64,
    /// Peak resident set (VmHWM), KiB.
    pub rss_kib: Option<u64>,
}

/// Runs the plan, printing progress on stderr; a server that cannot start here is added to
/// `left_out` with the reason.
pub fn run_all(
    plan: &Plan,
    binaries: &Binaries,
    left_out: &mut Vec<String>,
) -> Result<Vec<RunResult>, String> {
    let logs = project_root().join("target/bench/logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let mut startable = Vec::new();
    for server in &plan.servers {
        match probe(server, binaries, &logs)? {
            Started::Yes => startable.push(server.name),
            Started::NotBuilt => {}
            Started::No(why) => left_out.push(format!("{}: it does not start: {why}", server.name)),
        }
    }
    let runs: Vec<_> = plan
        .runs()
        .into_iter()
        .filter(|(_, server, _)| startable.contains(&server.name))
        .collect();
    let mut results = Vec::new();
    for (n, &(scenario, server, round)) in runs.iter().enumerate() {
        let left_s = (plan.warmup_s + plan.duration_s + 1) as usize * (runs.len() - n);
        eprintln!(
            "bench http [{}/{}] {} {} round {}/{}, about {left_s} s left",
            n + 1,
            runs.len(),
            scenario.name,
            server.name,
            round,
            plan.rounds,
        );
        let log = logs.join(format!("{}-{}-{round}.log", scenario.name, server.name));
        let ctx = RunCtx {
            plan,
            scenario,
            server,
            binaries,
            log: &log,
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

/// Whether a server starts here.
enum Started {
    Yes,
    /// Its binary did not build (the build said why).
    NotBuilt,
    /// It does not start, for this reason.
    No(String),
}

/// Whether `server` starts here: the io_uring server where io_uring is blocked is left out
/// with a line saying so; the epoll server and hyper must start.
fn probe(server: &Server, binaries: &Binaries, logs: &Path) -> Result<Started, String> {
    if program(server, binaries, "127.0.0.1:0").is_none() {
        return Ok(Started::NotBuilt);
    }
    let log_path = logs.join(format!("probe-{}.log", server.name));
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let started = start(server, binaries, None, log).map(|(mut proc, _)| {
        let _ = proc.stop_with("-KILL");
    });
    let Err(error) = started else {
        return Ok(Started::Yes);
    };
    let said = std::fs::read_to_string(&log_path).unwrap_or_default();
    let why = format!(
        "{error}: {}",
        said.lines().last().unwrap_or("(nothing on stderr)")
    );
    if let ServerKind::Example {
        backend: "io_uring",
    } = server.kind
    {
        eprintln!(
            "bench: {} left out: it does not start here: {why}",
            server.name
        );
        return Ok(Started::No(why));
    }
    Err(format!("{} does not start: {why}", server.name))
}

/// The server's command line and environment, without pinning; `None` for a server whose
/// binary did not build.
fn program(
    server: &Server,
    binaries: &Binaries,
    addr: &str,
) -> Option<(Vec<String>, Option<&'static str>)> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    match server.kind {
        ServerKind::Example { backend } => {
            let binary = binaries.example.as_deref()?;
            let program = vec![path(binary), "--listen".into(), addr.into()];
            Some((program, Some(backend)))
        }
        ServerKind::Peer { dir } => {
            let (_, binary) = binaries.peers.iter().find(|(name, _)| *name == dir)?;
            Some((vec![path(binary), addr.into()], None))
        }
    }
}

/// Starts `server` on a free port of 127.0.0.1, pinned to `cpus`, and waits until it listens;
/// returns it and the address it listens on.
fn start(
    server: &Server,
    binaries: &Binaries,
    cpus: Option<&str>,
    log: File,
) -> Result<(Proc, String), String> {
    let free = TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr());
    let addr = free.map_err(|e| format!("finding a free port: {e}"))?;
    let (program, backend) =
        program(server, binaries, &addr.to_string()).ok_or("no binary: it did not build")?;
    let mut command = pinned(cpus, &program);
    if let Some(backend) = backend {
        command.env("DISPATCH_BACKEND", backend);
    }
    let mut proc = Proc::spawn(command, log, false)?;
    match listening(&mut proc, addr, Duration::from_secs(10)) {
        Ok(addr) => Ok((proc, addr)),
        Err(error) => {
            let _ = proc.stop_with("-KILL");
            Err(format!("{} did not start: {error}", server.name))
        }
    }
}

/// Waits until the server listens: it printed `listening on ADDR` (then ADDR is the one to
/// use), or a connection to `addr`, the address it was given, is accepted. A server need not
/// print anything, and may close its stdout.
fn listening(server: &mut Proc, addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match server.lines.try_recv() {
            Ok(line) => match line.strip_prefix("listening on ") {
                Some(said) => return Ok(said.trim().to_owned()),
                None => continue,
            },
            Err(TryRecvError::Disconnected) | Err(TryRecvError::Empty) => {}
        }
        if let Some(status) = server.exited() {
            return Err(format!("it exited ({status})"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(addr.to_string());
        }
        if deadline < Instant::now() {
            return Err(format!("not listening on {addr} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything one run needs.
struct RunCtx<'a> {
    plan: &'a Plan,
    scenario: Scenario,
    server: Server,
    binaries: &'a Binaries,
    log: &'a Path,
}

fn run_one(ctx: &RunCtx) -> RunResult {
    let mut result = RunResult {
        scenario: ctx.scenario.name,
        server: ctx.server.name,
        ..RunResult::default()
    };
    let started = File::create(ctx.log)
        .map_err(|e| format!("{}: {e}", ctx.log.display()))
        .and_then(|log| {
            let cpus = ctx.plan.server_cpus.as_deref();
            start(&ctx.server, ctx.binaries, cpus, log)
        });
    let (mut server, addr) = match started {
        Ok(started) => started,
        Err(error) => {
            result.failure = Some(error);
            return result;
        }
    };
    let measured = measure(ctx, &server, &addr, &mut result);
    result.rss_kib = peak_rss_kib(server.pid);
    let stopped = server.stop_with("-TERM");
    if let Err(error) = measured {
        result.failure = Some(error);
    } else if let Err(error) = stopped {
        result.failure = Some(format!("{}: {error}", ctx.server.name));
    }
    result
}

/// Checks the answers, warms up, and runs wrk with the server's CPU time read around it.
fn measure(ctx: &RunCtx, server: &Proc, addr: &str, result: &mut RunResult) -> Result<(), String> {
    http_check::routes(addr).map_err(|e| format!("{}'s answers: {e}", ctx.server.name))?;
    if ctx.plan.warmup_s > 0 {
        wrk(ctx, addr, ctx.plan.warmup_s).map_err(|e| format!("warm-up: {e}"))?;
    }
    let cpu_start = cpu_ticks(server.pid)?;
    let counted = wrk(ctx, addr, ctx.plan.duration_s)?;
    let cpu_end = cpu_ticks(server.pid)?;
    if counted.requests == 0 {
        return Err("wrk counted no response".into());
    }
    let us_per_tick = 1e6 / clock_ticks_per_s();
    let per_request = |ticks: u64| ticks as f64 * us_per_tick / counted.requests as f64;
    result.requests = counted.requests;
    result.requests_per_s = counted.requests_per_s;
    result.user_us = per_request(cpu_end.0 - cpu_start.0);
    result.sys_us = per_request(cpu_end.1 - cpu_start.1);
    // wrk times a pipelined batch as one sample, then "corrects" its histogram as if every
    // response were one (its coordinated-omission correction, from responses per
    // connection): under pipelining its percentiles mean nothing (it printed `99% 0.00us`).
    if ctx.scenario.depth == 1 {
        result.p50_us = counted.p50_us;
        result.p99_us = counted.p99_us;
    }
    Ok(())
}

/// What wrk printed that the run uses.
#[derive(Debug, Clone, PartialEq)]
struct WrkCounts {
    requests: u64,
    requests_per_s: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

/// Runs wrk for `seconds` against `addr`, its output appended to the log; fails where wrk
/// fails or counts an error.
fn wrk(ctx: &RunCtx, addr: &str, seconds: u32) -> Result<WrkCounts, String> {
    let s = ctx.scenario;
    let threads = ctx.plan.client_threads.clamp(1, s.connections);
    let mut args = vec![
        "wrk".to_owned(),
        format!("--threads={threads}"),
        format!("--connections={}", s.connections),
        format!("--duration={seconds}s"),
        "--timeout=2s".into(),
        "--latency".into(),
        format!("http://{addr}{PATH}"),
    ];
    if s.depth > 1 {
        let script = project_root().join("bench/wrk/pipeline.lua");
        args.extend(["--script".into(), script.to_string_lossy().into_owned()]);
        args.extend(["--".into(), s.depth.to_string()]);
    }
    let mut log = File::options()
        .append(true)
        .open(ctx.log)
        .map_err(|e| e.to_string())?;
    let _ = writeln!(log, "$ {}", args.join(" "));
    let cpus = ctx.plan.client_cpus.as_deref();
    let clone = log.try_clone().map_err(|e| e.to_string())?;
    let mut proc = Proc::spawn(pinned(cpus, &args), clone, false)?;
    let (lines, status) = proc
        .finish(Duration::from_secs(u64::from(seconds) + 30))
        .map_err(|e| format!("wrk {e}"))?;
    let _ = writeln!(log, "{}", lines.join("\n"));
    if !status.success() {
        let last = lines.last().map_or("(no output)", String::as_str);
        return Err(format!("wrk failed ({status}): {last}"));
    }
    parse_wrk(&lines)
}

/// wrk's counts from its output; an error where it counted socket errors or non-2xx/3xx
/// responses, or printed no count.
fn parse_wrk(lines: &[String]) -> Result<WrkCounts, String> {
    let mut counts = WrkCounts {
        requests: 0,
        requests_per_s: f64::NAN,
        p50_us: None,
        p99_us: None,
    };
    for line in lines.iter().map(|line| line.trim()) {
        if let Some(errors) = line.strip_prefix("Socket errors:") {
            let any = errors
                .split(',')
                .any(|e| e.split_whitespace().nth(1) != Some("0"));
            if any {
                return Err(format!("wrk counted socket errors:{errors}"));
            }
        } else if line.starts_with("Non-2xx or 3xx responses:") {
            return Err(format!("wrk counted {line}"));
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            counts.requests_per_s = rate.trim().parse().unwrap_or(f64::NAN);
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            counts.requests = count.trim().parse().unwrap_or(0);
        } else if let Some(value) = line.strip_prefix("50%") {
            counts.p50_us = latency_us(value);
        } else if let Some(value) = line.strip_prefix("99%") {
            counts.p99_us = latency_us(value);
        }
    }
    if !counts.requests_per_s.is_finite() {
        return Err("wrk printed no `Requests/sec:` line".into());
    }
    Ok(counts)
}

/// A wrk duration (`292.00us`, `1.50ms`, `2.00s`) in µs; `None` for zero, which wrk prints
/// where its histogram has no such percentile.
fn latency_us(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let value: f64 = text[..split].parse().ok()?;
    let scale = match &text[split..] {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    (value > 0.0).then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    const OUTPUT: &str = "Running 2s test @ http://127.0.0.1:18080/plaintext
  1 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   313.15us  140.61us   3.46ms   95.01%
    Req/Sec   169.27k     3.86k  173.78k    90.00%
  Latency Distribution
     50%  292.00us
     75%  305.00us
     90%  321.00us
     99%    1.61ms
  337342 requests in 2.00s, 37.00MB read
Requests/sec: 168441.83
Transfer/sec:     18.47MB";

    #[test]
    fn wrk_output_is_read() {
        let counts = parse_wrk(&lines(OUTPUT)).unwrap();
        assert_eq!(counts.requests, 337342);
        assert_eq!(counts.requests_per_s, 168441.83);
        assert_eq!(counts.p50_us, Some(292.0));
        assert_eq!(counts.p99_us, Some(1610.0));
        assert_eq!(latency_us("0.00us"), None);
        assert_eq!(latency_us("2.00s"), Some(2e6));
    }

    #[test]
    fn wrk_errors_fail_the_run() {
        let errors = OUTPUT.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse_wrk(&lines(&errors)).unwrap_err().contains("read 3"));
        let none = OUTPUT.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 0, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse_wrk(&lines(&none)).is_ok());
        let non_2xx = OUTPUT.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 5\nRequests/sec",
        );
        assert!(parse_wrk(&lines(&non_2xx)).is_err());
        assert!(parse_wrk(&lines("unable to connect")).is_err());
    }
}
