//! The loop's own cost per operation, for `cargo xtask bench` to count under callgrind: `N`
//! nops through the loop (`Io::nop`, 32 chains of a nop scheduled from the previous one's
//! callback, on io_uring), or through a raw io_uring ring with no loop around it (32 nops in
//! flight, each completion pushing the next). Counting two runs of different `N` and
//! dividing the difference by the difference in `N` leaves the user-space instructions one
//! nop costs: schedule, enqueue, push, reap and dispatch, without set-up.
//!
//! ```text
//! cargo run --release -p dispatch-loop --example nop_cost -- loop 100000
//! cargo run --release -p dispatch-loop --example nop_cost -- raw 100000
//! ```
// The raw ring's pushes: a nop points at no memory.
#![allow(unsafe_code)]

/// Nops in flight at once.
#[cfg(target_os = "linux")]
const CHAINS: u64 = 32;

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(Ok(n))) = (args.next(), args.next().map(|n| n.parse::<u64>())) else {
        eprintln!("usage: nop_cost loop|raw N");
        return std::process::ExitCode::FAILURE;
    };
    let result = match mode.as_str() {
        "loop" => through_the_loop(n),
        "raw" => through_a_raw_ring(n),
        _ => Err(format!("no mode {mode:?}: loop or raw")),
    };
    match result {
        Ok(done) => {
            println!("nop_cost: {mode}: {done} nops");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("nop_cost: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("nop_cost: io_uring only (Linux)");
}

/// Schedules the next nop of a chain while nops are left to do.
#[cfg(target_os = "linux")]
fn on_nop(left: &mut u64, io: &mut dispatch_loop::Io<u64>, tag: u64, done: std::io::Result<()>) {
    done.expect("a nop succeeds");
    if *left > 0 {
        *left -= 1;
        io.nop(tag, on_nop).expect("a chain's slot is free again");
    }
}

#[cfg(target_os = "linux")]
fn through_the_loop(n: u64) -> Result<u64, String> {
    use dispatch_loop::{BackendKind, Io, Options};
    let mut options = Options::new(64);
    options.backend = Some(BackendKind::IoUring);
    let mut io: Io<u64> = Io::new(&options).map_err(|e| e.to_string())?;
    let mut left = n.saturating_sub(CHAINS);
    for chain in 0..CHAINS.min(n) {
        io.nop(chain, on_nop).map_err(|e| e.to_string())?;
    }
    io.run_until_idle(&mut left).map_err(|e| e.to_string())?;
    Ok(io.stats().ops_completed)
}

#[cfg(target_os = "linux")]
fn through_a_raw_ring(n: u64) -> Result<u64, String> {
    use io_uring::{opcode, IoUring};
    let mut ring = IoUring::new(64).map_err(|e| e.to_string())?;
    let nop = opcode::Nop::new().build();
    let (mut pushed, mut done) = (0, 0);
    while pushed < CHAINS.min(n) {
        // SAFETY: a nop points at no memory.
        unsafe { ring.submission().push(&nop.clone().user_data(pushed)) }
            .map_err(|_| "the SQ has room for 32")?;
        pushed += 1;
    }
    while done < n {
        ring.submit_and_wait(1).map_err(|e| e.to_string())?;
        let mut completion = ring.completion();
        let mut again = 0;
        for cqe in &mut completion {
            assert!(cqe.result() >= 0, "a nop succeeds");
            done += 1;
            again += 1;
        }
        drop(completion);
        for _ in 0..again {
            if pushed == n {
                break;
            }
            // SAFETY: as above.
            unsafe { ring.submission().push(&nop.clone().user_data(pushed)) }
                .map_err(|_| "a completion freed a place in the SQ")?;
            pushed += 1;
        }
    }
    Ok(done)
}
