//! What `IORING_OP_SEND_ZC` (Linux 6.0) saves against `IORING_OP_SEND` on a TCP stream, for
//! issue 21's "large sends without copies": each round streams `MIB` MiB over one loopback
//! connection in sends of 16, 64 and 256 KiB, with plain sends and zero-copy ones,
//! interleaved, while a reader thread drains the other end with blocking reads. A plain
//! send's buffer is free again at its completion; a zero-copy one's only at its notification
//! (`IORING_CQE_F_NOTIF`, after a result flagged `IORING_CQE_F_MORE`). `DEPTH` buffers per
//! size keep that many sends in flight; the sender runs on CPU 0, the reader on CPU 1.
//! Zero-copy runs twice: of plain memory (the kernel pins the pages on every send) and of
//! registered buffers (`IORING_RECVSEND_FIXED_BUF`: pinned once, at registration); the three
//! modes are rotated. The figures are the process's CPU time (getrusage `RUSAGE_SELF`: the
//! sender, the reader and any io_uring worker) per MiB, and throughput; the summary is the
//! median of the per-round ratios to the plain send, with min and max. On loopback the
//! kernel copies a zero-copy send's pages anyway, later, when it delivers them to the local
//! socket (the kernel's `Documentation/networking/msg_zerocopy.rst`, "Loopback": a "deferred
//! copy"), so what this measures there is that copy moved plus the price of pinning and
//! notifying. A benchmark, not a test: it judges nothing.
//!
//! ```text
//! cargo run --release -p sys-uring --example send_zc_cost -- [MIB=256] [ROUNDS=8] [DEPTH=4]
//! ```
// The pushes: every buffer a send names stays alive, untouched, until its last CQE.
#![allow(unsafe_code)]

/// How a run sends.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `IORING_OP_SEND`.
    Plain,
    /// `IORING_OP_SEND_ZC` of plain memory: the kernel pins its pages per send.
    Zc,
    /// `IORING_OP_SEND_ZC` of registered buffers (`IORING_RECVSEND_FIXED_BUF`), pinned once.
    ZcFixed,
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let depth: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let modes = [Mode::Plain, Mode::Zc, Mode::ZcFixed];
    for size in [16 << 10, 64 << 10, 256 << 10] {
        let mut ratios: [Vec<f64>; 4] = Default::default();
        for round in 0..rounds {
            // Rotate which goes first, so that none always runs on a warmer machine.
            let mut results = [Run::default(); 3];
            for i in 0..modes.len() {
                let idx = (i + round as usize) % modes.len();
                match stream(mib << 20, size, depth, modes[idx]) {
                    Ok(run) => results[idx] = run,
                    Err(error) => {
                        eprintln!("send_zc_cost: {error}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            }
            let [plain, zc, fixed] = results;
            println!(
                "{} KiB round {round}: µs CPU/MiB and MiB/s: plain {:.1} {:.0}, zc {:.1} {:.0}, \
                 zc fixed {:.1} {:.0}",
                size >> 10,
                plain.cpu_us_per_mib(),
                plain.mib_per_s(),
                zc.cpu_us_per_mib(),
                zc.mib_per_s(),
                fixed.cpu_us_per_mib(),
                fixed.mib_per_s(),
            );
            ratios[0].push(zc.cpu_us_per_mib() / plain.cpu_us_per_mib());
            ratios[1].push(zc.mib_per_s() / plain.mib_per_s());
            ratios[2].push(fixed.cpu_us_per_mib() / plain.cpu_us_per_mib());
            ratios[3].push(fixed.mib_per_s() / plain.mib_per_s());
        }
        let [cpu, rate, fixed_cpu, fixed_rate] = &mut ratios;
        println!(
            "{} KiB: zc/plain CPU per MiB {}, throughput {}",
            size >> 10,
            summary(cpu),
            summary(rate)
        );
        println!(
            "{} KiB: zc fixed/plain CPU per MiB {}, throughput {}",
            size >> 10,
            summary(fixed_cpu),
            summary(fixed_rate)
        );
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("send_zc_cost: io_uring only (Linux)");
}

/// "median M (min A, max B) over N rounds".
#[cfg(target_os = "linux")]
fn summary(ratios: &mut [f64]) -> String {
    ratios.sort_by(f64::total_cmp);
    match (ratios.first(), ratios.last()) {
        (Some(first), Some(last)) => format!(
            "median {:.3} (min {first:.3}, max {last:.3}) over {} rounds",
            ratios[ratios.len() / 2],
            ratios.len()
        ),
        _ => "no rounds".to_owned(),
    }
}

/// One stream's bytes, CPU and wall time.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy, Default)]
struct Run {
    bytes: u64,
    cpu_ns: u64,
    wall_ns: u64,
}

#[cfg(target_os = "linux")]
impl Run {
    fn cpu_us_per_mib(&self) -> f64 {
        self.cpu_ns as f64 / 1e3 / (self.bytes as f64 / f64::from(1 << 20))
    }

    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / f64::from(1 << 20) / (self.wall_ns as f64 / 1e9)
    }
}

/// The process's user plus system CPU time in nanoseconds.
#[cfg(target_os = "linux")]
fn cpu_ns() -> u64 {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Pins the calling thread to `cpu` where the machine has it (the sender to 0, the reader
/// to 1): left to the scheduler, the two sometimes share a core and sometimes not, and the
/// figures of one mode split in two clusters.
#[cfg(target_os = "linux")]
fn pin(cpu: usize) {
    // SAFETY: `set` is a zeroed `cpu_set_t` that `CPU_SET` writes within and
    // `sched_setaffinity` reads; failure (a CPU the machine lacks) leaves the thread as is.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// One buffer's sends in flight: bytes still to send and notifications still to come.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy, Default)]
struct InFlight {
    offset: usize,
    remaining: usize,
    notifs: u32,
}

/// Streams `total` bytes in sends of `size` over a fresh loopback connection.
#[cfg(target_os = "linux")]
fn stream(total: u64, size: usize, depth: usize, mode: Mode) -> Result<Run, String> {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let client = std::net::TcpStream::connect(listener.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    // Without it a zero-copy send shorter than the loopback MSS (64 KiB) waits for the ACK
    // of the previous one (Nagle) and delayed ACKs hold it for up to 40 ms: a plain send's
    // bytes join the previous segment, a zero-copy send's pages cannot.
    client.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut server, _) = listener.accept().map_err(|e| e.to_string())?;
    pin(0);
    let reader = std::thread::spawn(move || {
        pin(1);
        let mut buf = vec![0u8; 256 << 10];
        let mut bytes = 0u64;
        while let Ok(n @ 1..) = server.read(&mut buf) {
            bytes += n as u64;
        }
        bytes
    });
    let mut sender = Sender::new(client.as_raw_fd(), size, depth, mode)?;
    let (cpu_start, wall_start) = (cpu_ns(), std::time::Instant::now());
    if let Err(error) = sender.send_all(total) {
        // Sends may still be in flight: their buffers must never be freed.
        std::mem::forget(sender);
        return Err(error);
    }
    drop(client);
    let bytes = reader.join().map_err(|_| "the reader panicked")?;
    let wall_ns = wall_start.elapsed().as_nanos() as u64;
    let cpu_ns = cpu_ns() - cpu_start;
    assert_eq!(bytes, total, "the reader got every byte");
    Ok(Run {
        bytes,
        cpu_ns,
        wall_ns,
    })
}

/// The sending side: a ring and `depth` buffers. `ring` is declared first, so it is dropped
/// before the buffers it was given.
#[cfg(target_os = "linux")]
struct Sender {
    ring: io_uring::IoUring,
    buffers: Vec<Vec<u8>>,
    flight: Vec<InFlight>,
    fd: io_uring::types::Fd,
    size: usize,
    mode: Mode,
}

#[cfg(target_os = "linux")]
impl Sender {
    fn new(fd: i32, size: usize, depth: usize, mode: Mode) -> Result<Sender, String> {
        let ring = io_uring::IoUring::new(64).map_err(|e| e.to_string())?;
        let mut buffers: Vec<Vec<u8>> = (0..depth).map(|i| vec![i as u8 + 1; size]).collect();
        if mode == Mode::ZcFixed {
            let iovecs: Vec<libc::iovec> = buffers
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            // SAFETY: the buffers move into the `Sender` with the ring and are dropped after
            // it (field order): the registered memory outlives the registration.
            unsafe { ring.submitter().register_buffers(&iovecs) }.map_err(|e| e.to_string())?;
        }
        let flight = vec![InFlight::default(); depth];
        let fd = io_uring::types::Fd(fd);
        Ok(Sender {
            ring,
            buffers,
            flight,
            fd,
            size,
            mode,
        })
    }

    /// Sends what `flight[idx]` has left of buffer `idx`.
    fn push(&mut self, idx: usize) -> Result<(), String> {
        use io_uring::opcode;
        let (f, fd) = (self.flight[idx], self.fd);
        let ptr = self.buffers[idx][f.offset..].as_mut_ptr();
        let len = u32::try_from(f.remaining).map_err(|e| e.to_string())?;
        let entry = match self.mode {
            Mode::Plain => opcode::Send::new(fd, ptr, len).build(),
            Mode::Zc => opcode::SendZc::new(fd, ptr, len).build(),
            Mode::ZcFixed => opcode::SendZc::new(fd, ptr, len)
                .buf_index(Some(idx as u16))
                .build(),
        };
        // SAFETY: buffer `idx` is neither written nor freed until its last CQE: `flight[idx]`
        // keeps it busy until then, and a `Sender` whose sends may be in flight is leaked.
        unsafe { self.ring.submission().push(&entry.user_data(idx as u64)) }
            .map_err(|_| "SQ full".to_owned())
    }

    /// Sends `total` bytes, keeping every buffer busy, until each has posted its last CQE.
    fn send_all(&mut self, total: u64) -> Result<(), String> {
        use io_uring::cqueue;
        let (mut queued, mut busy) = (0u64, 0usize);
        let mut cqes = Vec::with_capacity(64);
        while queued < total || busy > 0 {
            for idx in 0..self.flight.len() {
                let f = &mut self.flight[idx];
                if f.remaining == 0 && f.notifs == 0 && queued < total {
                    let len = (total - queued).min(self.size as u64) as usize;
                    *f = InFlight {
                        offset: 0,
                        remaining: len,
                        notifs: 0,
                    };
                    (queued, busy) = (queued + len as u64, busy + 1);
                    self.push(idx)?;
                }
            }
            self.ring.submit_and_wait(1).map_err(|e| e.to_string())?;
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(data, result, flags) in &cqes {
                let idx = data as usize;
                let f = &mut self.flight[idx];
                if cqueue::notif(flags) {
                    f.notifs -= 1;
                } else {
                    let sent =
                        usize::try_from(result).map_err(|_| format!("send: errno {}", -result))?;
                    f.notifs += u32::from(cqueue::more(flags));
                    (f.offset, f.remaining) = (f.offset + sent, f.remaining - sent);
                    if f.remaining > 0 {
                        self.push(idx)?;
                    }
                }
                let f = self.flight[idx];
                busy -= usize::from(f.remaining == 0 && f.notifs == 0);
            }
        }
        Ok(())
    }
}
