//! The loop's own cost per operation, for `cargo xtask bench` to count under callgrind: `N`
//! nops through the loop (`Io::nop`, 32 chains of a nop scheduled from the previous one's
//! callback, on io_uring), or through a raw io_uring ring with no loop around it (32 nops in
//! flight, each completion pushing the next). Counting two runs of different `N` and
//! dividing the difference by the difference in `N` leaves the user-space instructions one
//! nop costs: schedule, enqueue, push, reap and dispatch, without set-up.
//!
//! The `*-sendrecv` modes do the same for plain sends and receives: `N` exchanges, each a
//! 64-byte `send` on one end of a Unix socket pair and, once it completed, a 64-byte `recv`
//! on the other (8 pairs, one chain each), through the loop (`Io::send`, `Io::recv`, the
//! buffer moving through both) or through a raw ring.
//!
//! ```text
//! cargo run --release -p dispatch-loop --example nop_cost -- loop 100000
//! cargo run --release -p dispatch-loop --example nop_cost -- raw 100000
//! cargo run --release -p dispatch-loop --example nop_cost -- loop-sendrecv 100000
//! cargo run --release -p dispatch-loop --example nop_cost -- raw-sendrecv 100000
//! ```
// The raw ring's pushes: a nop points at no memory; a send or receive at a buffer that
// outlives it.
#![allow(unsafe_code)]

/// Nops in flight at once.
#[cfg(target_os = "linux")]
const CHAINS: u64 = 32;

/// Socket pairs (one send-then-receive chain each) of the `*-sendrecv` modes.
#[cfg(target_os = "linux")]
const PAIRS: usize = 8;

/// Bytes per send and receive.
#[cfg(target_os = "linux")]
const MESSAGE: usize = 64;

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(Ok(n))) = (args.next(), args.next().map(|n| n.parse::<u64>())) else {
        eprintln!("usage: nop_cost loop|raw|loop-sendrecv|raw-sendrecv N");
        return std::process::ExitCode::FAILURE;
    };
    let result = match mode.as_str() {
        "loop" => through_the_loop(n),
        "raw" => through_a_raw_ring(n),
        "loop-sendrecv" => sendrecv::through_the_loop(n),
        "raw-sendrecv" => sendrecv::through_a_raw_ring(n),
        _ => Err(format!(
            "no mode {mode:?}: loop, raw, loop-sendrecv or raw-sendrecv"
        )),
    };
    match result {
        Ok(done) => {
            println!("nop_cost: {mode}: {done} done");
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

/// Plain sends and receives, each exchange a send on one end of a socket pair and then a
/// receive on the other.
#[cfg(target_os = "linux")]
mod sendrecv {
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixStream;

    use dispatch_loop::{BackendKind, BufResult, Io, Options, Tag};

    use super::{MESSAGE, PAIRS};

    /// The socket pairs, each end's descriptor, and the exchanges left to start.
    struct Pairs {
        sockets: Vec<(UnixStream, UnixStream)>,
        left: u64,
    }

    impl Pairs {
        fn new(n: u64) -> Result<Pairs, String> {
            let sockets = (0..PAIRS)
                .map(|_| UnixStream::pair().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Pairs { sockets, left: n })
        }

        fn ends(&self, pair: usize) -> (RawFd, RawFd) {
            let (a, b) = &self.sockets[pair];
            (a.as_raw_fd(), b.as_raw_fd())
        }

        /// Takes one exchange to start, if any is left.
        fn take(&mut self) -> bool {
            let some = self.left > 0;
            self.left -= u64::from(some);
            some
        }
    }

    fn on_send(pairs: &mut Pairs, io: &mut Io<Pairs>, tag: Tag, (sent, mut buf): BufResult) {
        assert_eq!(sent.expect("a send succeeds"), MESSAGE);
        buf.clear();
        let (_, b) = pairs.ends(tag as usize);
        io.recv(tag, b, buf, on_recv)
            .expect("the pair's send slot is free again");
    }

    fn on_recv(pairs: &mut Pairs, io: &mut Io<Pairs>, tag: Tag, (got, buf): BufResult) {
        assert_eq!(got.expect("a receive succeeds"), MESSAGE);
        if pairs.take() {
            let (a, _) = pairs.ends(tag as usize);
            io.send(tag, a, buf, on_send)
                .expect("the pair's receive slot is free again");
        }
    }

    pub(super) fn through_the_loop(n: u64) -> Result<u64, String> {
        let mut options = Options::new(64);
        options.backend = Some(BackendKind::IoUring);
        let mut io: Io<Pairs> = Io::new(&options).map_err(|e| e.to_string())?;
        let mut pairs = Pairs::new(n)?;
        for pair in 0..PAIRS {
            if !pairs.take() {
                break;
            }
            let (a, _) = pairs.ends(pair);
            let buf = vec![7; MESSAGE];
            io.send(pair as Tag, a, buf, on_send)
                .map_err(|e| e.to_string())?;
        }
        io.run_until_idle(&mut pairs).map_err(|e| e.to_string())?;
        // A send and a receive per exchange.
        Ok(io.stats().ops_completed / 2)
    }

    pub(super) fn through_a_raw_ring(n: u64) -> Result<u64, String> {
        use io_uring::{opcode, types, IoUring};
        let mut ring = IoUring::new(64).map_err(|e| e.to_string())?;
        let mut pairs = Pairs::new(n)?;
        let mut bufs = vec![[7_u8; MESSAGE]; PAIRS];
        // `user_data`: the pair times two, plus one for its receive.
        let send = |pair: usize, fd: RawFd, buf: &[u8; MESSAGE]| {
            opcode::Send::new(types::Fd(fd), buf.as_ptr(), MESSAGE as u32)
                .build()
                .user_data(pair as u64 * 2)
        };
        for (pair, buf) in bufs.iter().enumerate() {
            if !pairs.take() {
                break;
            }
            let (a, _) = pairs.ends(pair);
            // SAFETY: `bufs` outlives the ring's use of it (every completion is reaped
            // before this function returns), and nobody touches a buffer in flight.
            unsafe { ring.submission().push(&send(pair, a, buf)) }
                .map_err(|_| "the SQ has room for a send per pair")?;
        }
        let mut done = 0;
        let mut in_flight = PAIRS.min(n as usize);
        while in_flight > 0 {
            ring.submit_and_wait(1).map_err(|e| e.to_string())?;
            // Copied out first (no allocation: at most two per pair are in flight), so that
            // the next SQEs can be pushed while going through them.
            let mut cqes = [(0_u64, 0_i32); 2 * PAIRS];
            let mut count = 0;
            for cqe in ring.completion() {
                cqes[count] = (cqe.user_data(), cqe.result());
                count += 1;
            }
            for &(user_data, result) in &cqes[..count] {
                assert_eq!(result, MESSAGE as i32, "a send or receive moves a message");
                let pair = (user_data / 2) as usize;
                let (a, b) = pairs.ends(pair);
                let entry = if user_data % 2 == 0 {
                    let ptr = bufs[pair].as_mut_ptr();
                    opcode::Recv::new(types::Fd(b), ptr, MESSAGE as u32)
                        .build()
                        .user_data(user_data + 1)
                } else {
                    done += 1;
                    if !pairs.take() {
                        in_flight -= 1;
                        continue;
                    }
                    send(pair, a, &bufs[pair])
                };
                // SAFETY: as above.
                unsafe { ring.submission().push(&entry) }
                    .map_err(|_| "a completion freed a place in the SQ")?;
            }
        }
        Ok(done)
    }
}
