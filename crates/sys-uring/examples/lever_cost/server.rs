//! `lever_cost`'s echo: the server thread and its ring, the provided-buffer ring it receives
//! into, and the client that drives it. One function, [`echo`], runs one side of a pair.
// The pushes and the buffer ring: every buffer and the ring memory outlive the io_uring.
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// The lever a run turns on (`None`: the baseline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lever {
    Direct,
    Bundle,
    Skip,
}

/// What every run of a pair shares.
pub struct Setup {
    pub conns: u32,
    pub rounds: u32,
    pub size: u32,
    pub buf_size: u32,
}

/// The measured rounds of one run: messages, the server thread's CPU, wall time.
#[derive(Clone, Copy, Default)]
pub struct Run {
    msgs: u64,
    cpu_ns: u64,
    wall_ns: u64,
    /// Receive completions and the buffers they carried, over the whole run.
    recv_cqes: u64,
    recv_bufs: u64,
}

impl Run {
    pub fn cpu_ns_per_msg(&self) -> f64 {
        self.cpu_ns as f64 / self.msgs as f64
    }

    pub fn msgs_per_s(&self) -> f64 {
        self.msgs as f64 / (self.wall_ns as f64 / 1e9)
    }

    pub fn bufs_per_recv(&self) -> f64 {
        self.recv_bufs as f64 / self.recv_cqes as f64
    }
}

const BGID: u16 = 7;
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const CLOSE: u64 = 3;

fn user_data(kind: u64, conn: usize, bid: u16) -> u64 {
    (kind << 56) | ((conn as u64) << 16) | u64::from(bid)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The calling thread's user plus system CPU time in nanoseconds.
fn thread_cpu_ns() -> u64 {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Pins the calling thread to `cpu` where the machine has it (the server to 0, the client
/// to 1), so that every run places them alike.
fn pin(cpu: usize) {
    // SAFETY: `set` is a zeroed `cpu_set_t` that `CPU_SET` writes within and
    // `sched_setaffinity` reads; failure (a CPU the machine lacks) leaves the thread as is.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs one echo: a server thread with `lever` (or none), this thread the client.
pub fn echo(setup: &Setup, lever: Option<Lever>) -> Result<Run, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let one: libc::c_int = 1;
    // SAFETY: plain calls on a socket this function owns; `one` outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) | libc::listen(listener.as_raw_fd(), 4096)
    };
    if rc != 0 {
        return Err(format!("listener: {}", io::Error::last_os_error()));
    }
    let (conns, rounds, size) = (setup.conns, setup.rounds, setup.size);
    let buf_size = setup.buf_size;
    pin(1);
    let server = std::thread::spawn(move || {
        pin(0);
        let end = u64::from(conns) * u64::from(size) * (1 + u64::from(rounds));
        let mut server = Server::new(&listener, lever, conns, buf_size)?;
        let run = match server.run(u64::from(conns) * u64::from(size), end) {
            Ok(run) => run,
            Err(error) => {
                // Receives and sends may still be in flight: their buffers must never be
                // freed, and closing the ring does not wait for them.
                std::mem::forget(server);
                return Err(error);
            }
        };
        Ok::<_, String>(Run {
            msgs: u64::from(conns) * u64::from(rounds),
            ..run
        })
    });
    let client = client(addr, setup);
    let run = server
        .join()
        .map_err(|_| "the server panicked".to_owned())??;
    client?;
    Ok(run)
}

/// Connects `conns` streams, then writes a message on each and reads each reply, `1 + rounds`
/// times; dropping the streams ends the server.
fn client(addr: std::net::SocketAddr, setup: &Setup) -> Result<(), String> {
    let mut streams = Vec::new();
    for _ in 0..setup.conns {
        let stream = std::net::TcpStream::connect(addr).map_err(err)?;
        stream.set_nodelay(true).map_err(err)?;
        streams.push(stream);
    }
    let message = vec![b'x'; setup.size as usize];
    let mut reply = vec![0; setup.size as usize];
    for _ in 0..=setup.rounds {
        for stream in &mut streams {
            stream.write_all(&message).map_err(err)?;
        }
        for stream in &mut streams {
            stream.read_exact(&mut reply).map_err(err)?;
        }
    }
    Ok(())
}

/// A provided-buffer ring with its buffers, and where each buffer was put in it (a bundle's
/// completion names its first buffer only; the rest follow it in ring order).
struct Buffers {
    ring: *mut BufRingEntry,
    layout: std::alloc::Layout,
    mask: u16,
    tail: u16,
    bid_at: Vec<u16>,
    pos_of: Vec<u16>,
    memory: Vec<u8>,
    buf_size: u32,
}

impl Buffers {
    fn new(entries: u16, buf_size: u32) -> Buffers {
        let layout = std::alloc::Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .expect("a valid layout");
        // SAFETY: the layout's size is not zero (entries > 0).
        let ring = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        assert!(!ring.is_null(), "the buffer ring's allocation");
        let mut buffers = Buffers {
            ring,
            layout,
            mask: entries - 1,
            tail: 0,
            bid_at: vec![0; usize::from(entries)],
            pos_of: vec![0; usize::from(entries)],
            memory: vec![0; usize::from(entries) * buf_size as usize],
            buf_size,
        };
        for bid in 0..entries {
            buffers.push(bid);
        }
        buffers.publish();
        buffers
    }

    fn addr(&self, bid: u16) -> *mut u8 {
        self.memory[usize::from(bid) * self.buf_size as usize..]
            .as_ptr()
            .cast_mut()
    }

    /// Lends buffer `bid` back to the kernel (seen after `publish`).
    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & self.mask);
        // SAFETY: `slot` is within the ring, past the published tail, so the kernel does not
        // read it; entry 0's `resv` is the tail, so fields are set one by one.
        let entry = unsafe { &mut *self.ring.add(slot) };
        entry.set_addr(self.addr(bid) as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.bid_at[slot] = bid;
        self.pos_of[usize::from(bid)] = self.tail;
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        // SAFETY: the tail is entry 0's reserved `u16`, aligned, read by the kernel with an
        // acquire load; release makes the entries written before it visible first.
        let tail = unsafe { &*BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The `n`th buffer of a completion whose first buffer is `first`.
    fn nth(&self, first: u16, n: u16) -> u16 {
        let pos = self.pos_of[usize::from(first)].wrapping_add(n);
        self.bid_at[usize::from(pos & self.mask)]
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout. A `Server` is dropped only after a run
        // that ended with every connection closed, so no operation that could take a buffer
        // or read the ring is left (the multishot accept takes none); after a failed run it
        // is leaked. `Server`'s fields drop in order, `ring` before `buffers`.
        unsafe { std::alloc::dealloc(self.ring.cast(), self.layout) }
    }
}

/// One accepted connection: its descriptor (a fixed-table index with `Direct`) and, with
/// `Skip`, the buffers of sends that posted nothing.
struct Conn {
    fd: u32,
    sent: Vec<u16>,
}

struct Server {
    ring: IoUring,
    buffers: Buffers,
    lever: Option<Lever>,
    listener: i32,
    conns: Vec<Conn>,
    closed: usize,
    conns_max: usize,
    received: u64,
    recv_cqes: u64,
    recv_bufs: u64,
}

impl Server {
    fn new(
        listener: &std::net::TcpListener,
        lever: Option<Lever>,
        conns: u32,
        buf_size: u32,
    ) -> Result<Server, String> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .setup_cqsize(8192)
            .build(1024)
            .map_err(err)?;
        let params = ring.params();
        if lever == Some(Lever::Bundle) && !params.is_feature_recvsend_bundle() {
            return Err("no IORING_FEAT_RECVSEND_BUNDLE (6.10)".to_owned());
        }
        if lever == Some(Lever::Skip) && !params.is_feature_skip_cqe_on_success() {
            return Err("no IORING_FEAT_CQE_SKIP (5.17)".to_owned());
        }
        if lever == Some(Lever::Direct) {
            ring.submitter()
                .register_files_sparse(conns + 16)
                .map_err(err)?;
        }
        let entries = (2 * conns).next_power_of_two().clamp(256, 32768) as u16;
        let buffers = Buffers::new(entries, buf_size);
        // SAFETY: the ring memory lives in `buffers`, dropped after `ring` (field order) and
        // only once no operation can read it (see `Buffers`'s `Drop`).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(buffers.ring as u64, entries, BGID, 0)
                .map_err(err)?;
        }
        Ok(Server {
            ring,
            buffers,
            lever,
            listener: listener.as_raw_fd(),
            conns: Vec::new(),
            closed: 0,
            conns_max: conns as usize,
            received: 0,
            recv_cqes: 0,
            recv_bufs: 0,
        })
    }

    fn push(&mut self, entry: &squeue::Entry) -> Result<(), String> {
        loop {
            // SAFETY: receives name the registered buffer ring; a send names a buffer that
            // stays out of the ring until its completion (or, with `Skip`, until the
            // connection's next message proves it over); every buffer lives in `buffers`,
            // freed only when no operation is left, or never (see `Buffers`'s `Drop`).
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit().map_err(err)?;
        }
    }

    fn accept(&mut self) -> Result<(), String> {
        let direct = self.lever == Some(Lever::Direct);
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener))
            .allocate_file_index(direct)
            .build()
            .user_data(user_data(ACCEPT, 0, 0));
        self.push(&entry)
    }

    fn recv(&mut self, conn: usize) -> Result<(), String> {
        let fd = self.conns[conn].fd;
        let entry = match self.lever {
            Some(Lever::Direct) => opcode::RecvMulti::new(types::Fixed(fd), BGID).build(),
            Some(Lever::Bundle) => opcode::RecvMultiBundle::new(types::Fd(fd as i32), BGID).build(),
            _ => opcode::RecvMulti::new(types::Fd(fd as i32), BGID).build(),
        };
        self.push(&entry.user_data(user_data(RECV, conn, 0)))
    }

    fn send(&mut self, conn: usize, bid: u16, len: u32) -> Result<(), String> {
        let (fd, ptr) = (self.conns[conn].fd, self.buffers.addr(bid));
        let entry = match self.lever {
            Some(Lever::Direct) => opcode::Send::new(types::Fixed(fd), ptr, len).build(),
            Some(Lever::Skip) => {
                self.conns[conn].sent.push(bid);
                opcode::Send::new(types::Fd(fd as i32), ptr, len)
                    .build()
                    .flags(squeue::Flags::SKIP_SUCCESS)
            }
            _ => opcode::Send::new(types::Fd(fd as i32), ptr, len).build(),
        };
        self.push(&entry.user_data(user_data(SEND, conn, bid)))
    }

    fn close(&mut self, conn: usize) -> Result<(), String> {
        let fd = self.conns[conn].fd;
        let entry = match self.lever {
            Some(Lever::Direct) => opcode::Close::new(types::Fixed(fd)).build(),
            _ => opcode::Close::new(types::Fd(fd as i32)).build(),
        };
        self.push(&entry.user_data(user_data(CLOSE, conn, 0)))
    }

    /// Serves until every connection closed; measures from `warm` bytes received to `end`.
    fn run(&mut self, warm: u64, end: u64) -> Result<Run, String> {
        self.accept()?;
        let mut start = None;
        let mut run = Run::default();
        let mut cqes = Vec::with_capacity(8192);
        while self.closed < self.conns_max {
            self.ring.submit_and_wait(1).map_err(err)?;
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(data, result, flags) in &cqes {
                let before = self.received;
                self.complete(data, result, flags)?;
                if before < warm && warm <= self.received {
                    start = Some((thread_cpu_ns(), std::time::Instant::now()));
                }
                if before < end && end <= self.received {
                    let (cpu, wall) = start.ok_or("no warm-up")?;
                    run.cpu_ns = thread_cpu_ns() - cpu;
                    run.wall_ns = wall.elapsed().as_nanos() as u64;
                }
            }
            self.buffers.publish();
        }
        run.recv_cqes = self.recv_cqes;
        run.recv_bufs = self.recv_bufs;
        Ok(run)
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32) -> Result<(), String> {
        let (kind, conn, bid) = (data >> 56, (data >> 16) as u32 as usize, data as u16);
        match kind {
            ACCEPT => {
                if result >= 0 {
                    self.conns.push(Conn {
                        fd: result as u32,
                        sent: Vec::new(),
                    });
                    self.recv(self.conns.len() - 1)?;
                }
                if !cqueue::more(flags) {
                    self.accept()?;
                }
            }
            RECV => self.received(conn, result, flags)?,
            SEND => {
                // Only a failure posts with `Skip`: its buffer is no longer pending.
                self.conns[conn].sent.retain(|&b| b != bid);
                self.buffers.push(bid);
            }
            CLOSE => self.closed += 1,
            _ => unreachable!("user data {data:#x}"),
        }
        Ok(())
    }

    fn received(&mut self, conn: usize, result: i32, flags: u32) -> Result<(), String> {
        // The connection's earlier replies were read whole before this message was sent.
        while let Some(bid) = self.conns[conn].sent.pop() {
            self.buffers.push(bid);
        }
        let first = cqueue::buffer_select(flags);
        match (result, first) {
            (1.., Some(first)) => {
                self.received += result as u64;
                let (mut left, mut n) = (result as u32, 0);
                while left > 0 {
                    let len = left.min(self.buffers.buf_size);
                    self.send(conn, self.buffers.nth(first, n), len)?;
                    (left, n) = (left - len, n + 1);
                }
                self.recv_cqes += 1;
                self.recv_bufs += u64::from(n);
                if !cqueue::more(flags) {
                    self.recv(conn)?;
                }
            }
            (0, _) => {
                if let Some(bid) = first {
                    self.buffers.push(bid);
                }
                self.close(conn)?;
            }
            (e, _) if e == -libc::ENOBUFS && !cqueue::more(flags) => self.recv(conn)?,
            (e, _) if e < 0 && !cqueue::more(flags) => self.close(conn)?,
            _ => return Err(format!("receive: result {result}, flags {flags:#x}")),
        }
        Ok(())
    }
}
