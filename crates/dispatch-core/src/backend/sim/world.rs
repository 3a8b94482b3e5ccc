//! The simulated world shared by a [`crate::sim::Sim`] handle and the loops that run on it:
//! the virtual clock, the seeded generator, the trace, the descriptor table, the network
//! (`net.rs`) and the disk (`disk.rs`). Single-threaded (`Rc<RefCell<World>>`); every
//! collection is ordered (vectors, `BTreeMap`), never hashed, so one seed gives one trace.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::rc::Rc;

use super::disk::Disk;
use super::net::Net;
use super::options::{Faults, SimOptions, SimStats};
use super::rng::{Rng, Trace};

/// The kinds of fault, as counted in `SimStats::faults` and recorded in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Latency = 1,
    Reorder,
    ShortIo,
    Reset,
    Refused,
    Delay,
    Emfile,
    DiskEio,
    TornWrite,
    Planted,
    LostCancel,
    DatagramLoss,
    DatagramDuplicate,
    DatagramReorder,
}

/// What a simulated descriptor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Obj {
    /// A stream socket not connected yet (from `Sim::socket`), numbered.
    Unbound(u32),
    /// One end of a stream connection.
    Stream(u32),
    /// A listening socket.
    Listener(u32),
    /// An open file.
    File(u32),
    /// A datagram socket (`udp.rs`).
    Datagram(u32),
    /// One end of a Unix datagram pair (`unix.rs`).
    UnixDgram(u32),
    /// Killed by a simulated crash: operations fail with `EIO`, close succeeds.
    Dead,
}

impl Obj {
    /// What the object is, as one number that no other object of the world ever has.
    /// Descriptor numbers come from the kernel and are reused, and other threads take
    /// numbers too, so nothing that decides the trace may depend on them: ordering keys do
    /// on this.
    pub(crate) fn key(self) -> u64 {
        let (kind, id) = match self {
            Obj::Unbound(id) => (1, id),
            Obj::Stream(id) => (2, id),
            Obj::Listener(id) => (3, id),
            Obj::File(id) => (4, id),
            Obj::Dead => (5, 0),
            Obj::Datagram(id) => (6, id),
            Obj::UnixDgram(id) => (7, id),
        };
        (kind << 32) | u64::from(id)
    }
}

/// A timed event of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Event {
    /// Segments in flight toward this endpoint may be due.
    Deliver(u32),
    /// This connection's first packet reaches its listener.
    Arrive(u32),
    /// A delayed operation may go on, or a late completion is due: loops look again.
    Wake,
}

/// The world. Loops reach it through their backend; the program through `Sim`.
pub(crate) struct World {
    pub(crate) now: Rc<Cell<u64>>,
    pub(crate) rng: Rng,
    pub(crate) faults: Faults,
    pub(crate) options: SimOptions,
    pub(crate) trace: Trace,
    pub(crate) stats: SimStats,
    /// Simulated descriptors by number. Each number is a real descriptor, a duplicate of
    /// `placeholder`, so that the `OwnedFd`s the loop hands out are sound (dropping one
    /// closes a real descriptor, never someone else's); the numbers never enter the trace.
    pub(crate) fds: BTreeMap<RawFd, Obj>,
    placeholder: OwnedFd,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    event_seq: u64,
    pub(crate) net: Net,
    pub(crate) disk: Disk,
    pub(crate) udp: super::udp::Udp,
    /// Unix pairs' datagrams and the descriptors passed over Unix sockets (`unix.rs`).
    pub(crate) unix: super::unix::Unix,
    /// A loop runs on this world now (one at a time).
    pub(crate) attached: bool,
    /// Unbound sockets made so far (their numbers).
    unbound: u32,
}

/// The directory `std::env::temp_dir` names, which a simulated disk starts with (and the
/// root), so that programs that make their files there run unchanged.
fn temp_dir() -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    std::env::temp_dir().as_os_str().as_bytes().to_vec()
}

impl World {
    pub(crate) fn new(options: &SimOptions) -> io::Result<World> {
        let placeholder = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(World {
            now: Rc::new(Cell::new(0)),
            rng: Rng::new(options.seed),
            faults: options.faults,
            options: *options,
            trace: Trace::new(),
            stats: SimStats::default(),
            fds: BTreeMap::new(),
            placeholder,
            events: BinaryHeap::new(),
            event_seq: 0,
            net: Net::default(),
            disk: Disk::new(options.disk_capacity_bytes, &[temp_dir().as_slice()]),
            udp: super::udp::Udp::default(),
            unix: super::unix::Unix::default(),
            attached: false,
            unbound: 0,
        })
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.now.get()
    }

    /// Schedules `event` at `at_ns`.
    pub(crate) fn at(&mut self, at_ns: u64, event: Event) {
        assert!(at_ns >= self.now_ns(), "an event in the past");
        self.event_seq += 1;
        self.events.push(Reverse((at_ns, self.event_seq, event)));
    }

    /// When the next event is due.
    pub(crate) fn next_event_ns(&self) -> Option<u64> {
        self.events.peek().map(|Reverse((at_ns, _, _))| *at_ns)
    }

    /// Moves the clock to `to_ns` (never back) and applies every event due by then.
    pub(crate) fn advance(&mut self, to_ns: u64) {
        assert!(to_ns >= self.now_ns(), "time never goes back");
        self.now.set(to_ns);
        while let Some(&Reverse((at_ns, _, event))) = self.events.peek() {
            if at_ns > to_ns {
                break;
            }
            self.events.pop();
            match event {
                Event::Deliver(endpoint) => self.deliver(endpoint),
                Event::Arrive(endpoint) => self.arrive(endpoint),
                Event::Wake => {}
            }
        }
    }

    /// A new simulated descriptor for `obj`, or `EMFILE` past `descriptors_max`.
    pub(crate) fn new_fd(&mut self, obj: Obj) -> Result<OwnedFd, i32> {
        if self.fds.len() >= self.options.descriptors_max as usize {
            return Err(libc::EMFILE);
        }
        let fd = rustix::io::fcntl_dupfd_cloexec(self.placeholder.as_fd(), 0)
            .map_err(|errno| errno.raw_os_error())?;
        let number = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // A number the table still holds was closed behind the simulator's back (an
        // `OwnedFd` dropped instead of closed through the loop): that object is gone.
        if let Some(old) = self.fds.insert(number, obj) {
            self.stats.dropped_descriptors += 1;
            self.release(old);
        }
        Ok(fd)
    }

    /// A new unbound socket object.
    pub(crate) fn unbound(&mut self) -> Obj {
        self.unbound += 1;
        Obj::Unbound(self.unbound)
    }

    /// The object descriptor `fd` names.
    pub(crate) fn obj(&self, fd: RawFd) -> Option<Obj> {
        self.fds.get(&fd).copied()
    }

    /// Closes simulated descriptor `fd`: what it named is released (a connection's peer
    /// sees the end of the stream or a reset). The real descriptor is the caller's to close.
    pub(crate) fn close_fd(&mut self, fd: RawFd) -> bool {
        match self.fds.remove(&fd) {
            Some(obj) => {
                self.release(obj);
                true
            }
            None => false,
        }
    }

    /// The last reference to `obj` is gone (a descriptor passed over a Unix socket and not
    /// yet closed, or still in flight, holds one more: see `unix.rs`).
    pub(crate) fn release(&mut self, obj: Obj) {
        if self.unix.drop_ref(obj) {
            return;
        }
        match obj {
            Obj::Stream(endpoint) => {
                self.close_endpoint(endpoint);
                self.unix_stream_closed(endpoint);
            }
            Obj::UnixDgram(id) => self.unix_dgram_close(id),
            Obj::Listener(listener) => self.close_listener(listener),
            Obj::File(file) => self.disk.close(file),
            Obj::Datagram(id) => self.udp_close(id),
            Obj::Unbound(_) | Obj::Dead => {}
        }
    }

    /// Descriptors open in the world (sockets, listeners, files).
    pub(crate) fn open_descriptors(&self) -> u32 {
        self.fds.len() as u32
    }

    /// Records one fault injected.
    pub(crate) fn fault(&mut self, kind: Fault) {
        self.stats.faults_injected += 1;
        let counts = &mut self.stats.faults;
        let count = match kind {
            Fault::Latency => &mut counts.latency,
            Fault::Reorder => &mut counts.reorder,
            Fault::ShortIo => &mut counts.short_io,
            Fault::Reset => &mut counts.reset,
            Fault::Refused => &mut counts.refused,
            Fault::Delay => &mut counts.delay,
            Fault::Emfile => &mut counts.emfile,
            Fault::DiskEio => &mut counts.disk_eio,
            Fault::TornWrite => &mut counts.torn_write,
            Fault::Planted => &mut counts.planted_bug,
            Fault::LostCancel => &mut counts.lost_cancel,
            Fault::DatagramLoss => &mut counts.datagram_loss,
            Fault::DatagramDuplicate => &mut counts.datagram_duplicate,
            Fault::DatagramReorder => &mut counts.datagram_reorder,
        };
        *count += 1;
        let now_ns = self.now_ns();
        self.trace.add(&[0xfa, kind as u64, now_ns]);
    }

    /// A simulated power loss: every file loses or tears what was written but not fsynced,
    /// and every descriptor dies (operations on it fail with `EIO`; closing it succeeds).
    pub(crate) fn crash(&mut self) {
        self.stats.crashes += 1;
        let now_ns = self.now_ns();
        self.trace.add(&[0xc4, now_ns]);
        // In the objects' order, not the descriptors' (see `Obj::key`).
        let mut objs: Vec<Obj> = Vec::with_capacity(self.fds.len());
        for obj in self.fds.values_mut() {
            objs.push(std::mem::replace(obj, Obj::Dead));
        }
        // Descriptors passed over Unix sockets: those in flight die too, and an object several
        // descriptors name is released once.
        objs.extend(self.unix_crash());
        objs.sort_by_key(|obj| obj.key());
        objs.dedup();
        for obj in objs {
            if let Obj::Stream(endpoint) = obj {
                self.reset_connection(endpoint);
            }
            if obj != Obj::Dead {
                self.release(obj);
            }
        }
        let torn_ppm = self.faults.torn_write;
        let disk = &mut self.disk;
        let torn = disk.crash(&mut self.rng, torn_ppm);
        for _ in 0..torn {
            self.fault(Fault::TornWrite);
        }
    }
}
