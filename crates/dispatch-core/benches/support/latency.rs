//! Latency micro benchmarks, io_uring against epoll, each printing its own percentiles:
//!
//! - `timer_late/{1ms,100us}/*`: how late a timeout's callback runs after the timeout is
//!   due (one timeout armed at a time, the loop otherwise idle), p50 and p99;
//! - `wakeup/*`: from `Waker::wake` on another thread to the `wait_wakeup` callback on the
//!   loop's thread, the loop asleep in the kernel meanwhile, p50 and p99.
//!
//! Criterion's own figure for these groups is the wall time of one iteration (the timeout
//! itself included, or the waker thread's 100 µs pause): it keeps criterion's planning
//! bounded in time. The latency is the line each prints after it.

use std::io;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use dispatch_loop::{BackendKind, Io, Options, Tag};

const BACKENDS: [(&str, BackendKind); 2] = [
    ("io_uring", BackendKind::IoUring),
    ("epoll", BackendKind::Epoll),
];

fn new_io<C>(backend: BackendKind) -> Io<C> {
    let mut options = Options::new(8);
    options.backend = Some(backend);
    Io::new(&options).expect("a loop on this backend")
}

/// Prints p50 and p99 of `samples_ns` (nothing when the benchmark was filtered out).
fn report(name: &str, what: &str, samples_ns: &mut [u64]) {
    if samples_ns.is_empty() {
        return;
    }
    samples_ns.sort_unstable();
    let at = |p: f64| {
        let rank = (samples_ns.len() as f64 * p).ceil() as usize;
        samples_ns[rank.clamp(1, samples_ns.len()) - 1] as f64 / 1000.0
    };
    println!(
        "{name}: {what} p50 {:.1} µs, p99 {:.1} µs, over {} samples",
        at(0.50),
        at(0.99),
        samples_ns.len()
    );
}

fn on_timer(fired: &mut Option<Instant>, _: &mut Io<Option<Instant>>, _: Tag, r: io::Result<()>) {
    r.expect("a timeout completes");
    *fired = Some(Instant::now());
}

/// How late 1 ms and 100 µs timeouts fire.
pub fn timers(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_late");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for (label, timeout_ns) in [("1ms", 1_000_000_u64), ("100us", 100_000)] {
        for (name, backend) in BACKENDS {
            let mut io = new_io::<Option<Instant>>(backend);
            let mut late_ns = Vec::new();
            group.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter_custom(|iters| {
                    let began = Instant::now();
                    for _ in 0..iters {
                        let mut fired = None;
                        let armed = Instant::now();
                        io.timeout(0, timeout_ns, on_timer).expect("a free slot");
                        io.run_until_idle(&mut fired).expect("run");
                        let due = armed + Duration::from_nanos(timeout_ns);
                        let late = fired.expect("fired").saturating_duration_since(due);
                        late_ns.push(late.as_nanos() as u64);
                    }
                    began.elapsed()
                });
            });
            let id = format!("timer_late/{label}/{name}");
            report(&id, "late by", &mut late_ns);
        }
    }
    group.finish();
}

fn on_wake(woken: &mut Option<Instant>, _: &mut Io<Option<Instant>>, _: Tag, r: io::Result<u64>) {
    r.expect("a wake-up");
    *woken = Some(Instant::now());
}

/// From `wake` on another thread to the callback on the loop's thread.
pub fn wakeups(c: &mut Criterion) {
    let mut group = c.benchmark_group("wakeup");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for (name, backend) in BACKENDS {
        let mut io = new_io::<Option<Instant>>(backend);
        let waker = io.waker();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (sent_tx, sent_rx) = mpsc::channel::<Instant>();
        // Wakes the loop once per `go`, after a pause long enough for the loop to be asleep
        // in the kernel; ends when `go_tx` is dropped.
        let thread = std::thread::spawn(move || {
            for () in go_rx {
                std::thread::sleep(Duration::from_micros(100));
                let sent = Instant::now();
                waker.wake().expect("wake");
                if sent_tx.send(sent).is_err() {
                    break;
                }
            }
        });
        let mut latency_ns = Vec::new();
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let began = Instant::now();
                for _ in 0..iters {
                    let mut woken = None;
                    io.wait_wakeup(0, on_wake).expect("a free slot");
                    go_tx.send(()).expect("the waker thread runs");
                    io.run_until_idle(&mut woken).expect("run");
                    let sent = sent_rx.recv().expect("the waker thread runs");
                    let latency = woken.expect("woken").saturating_duration_since(sent);
                    latency_ns.push(latency.as_nanos() as u64);
                }
                began.elapsed()
            });
        });
        drop(go_tx);
        thread.join().expect("the waker thread");
        report(
            &format!("wakeup/{name}"),
            "wake to callback",
            &mut latency_ns,
        );
    }
    group.finish();
}
