//! What three io_uring levers save per message on an echo server's own thread, for issue 20:
//! `direct` (accepted connections as direct descriptors: a multishot accept into a sparse
//! fixed file table, `IOSQE_FIXED_FILE` on every receive and send, `IORING_OP_CLOSE` on the
//! slot), `bundle` (`IORING_RECVSEND_BUNDLE` on the multishot receive, 6.10) and `skip`
//! (`IOSQE_CQE_SKIP_SUCCESS` on sends, 5.17). Each round runs the same echo twice, A without
//! the lever and B with it, in alternating order: a server thread with one ring
//! (`SINGLE_ISSUER`, `DEFER_TASKRUN`), a multishot accept, a multishot receive per connection
//! on a provided-buffer ring and a send of each received buffer straight back; a client
//! thread with `CONNS` blocking loopback connections that writes one `SIZE`-byte message on
//! each, then reads each reply, `ROUNDS` times after one warm-up round (the server thread
//! pinned to CPU 0, the client to CPU 1). The figure is the server thread's CPU time
//! (`getrusage(RUSAGE_THREAD)`, user plus system) per message over the measured rounds, and
//! the summary the median of the per-round ratios B/A with min and max; each line also says
//! how many buffers a receive completion carried. A benchmark, not a test: it judges nothing.
//!
//! With `skip`, a successful send posts nothing, so its buffer goes back to the ring when
//! the connection's next message arrives: the client sends it only after the whole reply
//! came, so the send is over. A ping-pong can infer that; a server in general cannot.
//!
//! ```text
//! cargo run --release -p sys-uring --example lever_cost -- direct|bundle|skip \
//!     [CONNS=100] [ROUNDS=2000] [PAIRS=8] [SIZE=64] [BUF=1024]
//! ```

#[cfg(target_os = "linux")]
mod server;

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lever = match args.first().map(String::as_str) {
        Some("direct") => server::Lever::Direct,
        Some("bundle") => server::Lever::Bundle,
        Some("skip") => server::Lever::Skip,
        _ => {
            eprintln!("usage: lever_cost direct|bundle|skip [CONNS] [ROUNDS] [PAIRS] [SIZE] [BUF]");
            return std::process::ExitCode::FAILURE;
        }
    };
    let arg = |i: usize, default: u32| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let setup = server::Setup {
        conns: arg(1, 100),
        rounds: arg(2, 2000),
        size: arg(4, 64),
        buf_size: arg(5, 1024),
    };
    let pairs = arg(3, 8);
    let mut ratios = Vec::new();
    for pair in 0..pairs {
        let order = if pair % 2 == 0 {
            [None, Some(lever)]
        } else {
            [Some(lever), None]
        };
        let mut results = [server::Run::default(); 2];
        for on in order {
            match server::echo(&setup, on) {
                Ok(run) => results[usize::from(on.is_some())] = run,
                Err(error) => {
                    eprintln!("lever_cost: {error}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        let [off, on] = results;
        let ratio = on.cpu_ns_per_msg() / off.cpu_ns_per_msg();
        println!(
            "pair {pair}: A {:.0} ns/msg {:.0} msg/s {:.2} bufs/recv, \
             B {:.0} ns/msg {:.0} msg/s {:.2} bufs/recv, B/A {ratio:.3}",
            off.cpu_ns_per_msg(),
            off.msgs_per_s(),
            off.bufs_per_recv(),
            on.cpu_ns_per_msg(),
            on.msgs_per_s(),
            on.bufs_per_recv()
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (ratios.first(), ratios.last()) {
        println!(
            "{lever:?} conns {} size {}: server CPU/msg B/A median {:.3} (min {first:.3}, \
             max {last:.3}) over {pairs} pairs",
            setup.conns,
            setup.size,
            ratios[ratios.len() / 2]
        );
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("lever_cost: io_uring only (Linux)");
}
