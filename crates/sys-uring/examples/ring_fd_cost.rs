//! What a registered ring descriptor (`IORING_REGISTER_RING_FDS`, Linux 5.18) saves per
//! `io_uring_enter`, measured, for issue 20's "remaining ring levers". Each round times `N`
//! enters that submit one nop and wait for it, once on a ring entered by its descriptor and
//! once on a ring entered by its registered index (`IORING_ENTER_REGISTERED_RING`: the
//! kernel skips looking the descriptor up), the two interleaved; the output is each round's
//! nanoseconds per enter and the median ratio. A benchmark, not a test: it judges nothing.
//!
//! ```text
//! cargo run --release -p sys-uring --example ring_fd_cost -- 200000 8
//! ```
// The pushes: a nop points at no memory.
#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (plain, registered) = match (enters(n, false), enters(n, true)) {
            (Ok(plain), Ok(registered)) => (plain, registered),
            (Err(error), _) | (_, Err(error)) => {
                eprintln!("ring_fd_cost: {error}");
                return std::process::ExitCode::FAILURE;
            }
        };
        println!(
            "round {round}: plain {plain:.1} ns/enter, registered {registered:.1} ns/enter, \
             ratio {:.3}",
            registered / plain
        );
        ratios.push(registered / plain);
    }
    ratios.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (ratios.first(), ratios.last()) {
        println!(
            "median registered/plain {:.3} (min {first:.3}, max {last:.3}) over {rounds} rounds",
            ratios[ratios.len() / 2]
        );
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("ring_fd_cost: io_uring only (Linux)");
}

/// Nanoseconds per enter over `n` enters of one nop each.
#[cfg(target_os = "linux")]
fn enters(n: u32, registered: bool) -> Result<f64, String> {
    use io_uring::{opcode, IoUring};
    let mut ring = IoUring::new(8).map_err(|e| e.to_string())?;
    let nop = opcode::Nop::new().build();
    let (submitter, mut sq, mut cq) = ring.split();
    let mut submitter = submitter;
    if registered {
        submitter
            .register_ring_fd()
            .map_err(|e| format!("IORING_REGISTER_RING_FDS: {e}"))?;
    }
    let start = std::time::Instant::now();
    for i in 0..n {
        // SAFETY: a nop points at no memory.
        unsafe { sq.push(&nop.clone().user_data(u64::from(i))) }
            .map_err(|_| "the SQ is empty after every reap")?;
        sq.sync();
        submitter.submit_and_wait(1).map_err(|e| e.to_string())?;
        cq.sync();
        for cqe in &mut cq {
            assert!(cqe.result() >= 0, "a nop succeeds");
        }
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(n))
}
