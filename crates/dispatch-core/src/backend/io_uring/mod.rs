//! The io_uring backend: every operation becomes one SQE in the shared submission queue, and
//! one `io_uring_enter` per loop turn submits them all and waits.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use sys_uring::opcode;
use sys_uring::squeue::Entry;
use sys_uring::types::{Fd, Timespec};
use sys_uring::{Ring, SetupError};

use self::dgram::DgramHdr;
use self::file::FileOpcodes;
use self::marked::Marked;
use self::pooled::PooledStep;
use self::setup::{lend_pool, ring_options, ring_stepping_down};
use self::sqe::{
    kernel_result, monotonic_ns, send_entry, slot_entry, spare_capacity, timespec_from_ns, Gather,
    RawSockAddr,
};
use super::PushError;
use crate::aligned::RegisteredSet;
use crate::completion::F_BUFFER;
use crate::operation::{Args, OpId};
use crate::options::Options;
use crate::outbuf::OutBuf;
use crate::pool::{Pool, PoolShared};
use crate::stats::{Stats, UringFeatures};
use crate::waker::Waker;

mod dgram;
mod file;
mod marked;
mod msg;
mod pooled;
mod setup;
mod sqe;
mod wait;

/// `user_data` values a backend uses for itself; no slot's `user_data` can equal them,
/// since slot indices are below 2^24 (`OPS_MAX_LIMIT`). This one: the wait timeout's.
const USER_DATA_WAIT_TIMEOUT: u64 = u64::MAX;
/// The `user_data` of cancellations issued by `Io`'s drop.
const USER_DATA_DROP_CANCEL: u64 = u64::MAX - 1;
/// The `user_data` of cancels sent again (`resend_cancel`).
const USER_DATA_RESENT_CANCEL: u64 = u64::MAX - 2;

const _: () = assert!(crate::options::OPS_MAX_LIMIT <= 1 << 24);

/// The buffer group of the loop's pool in the provided-buffer ring.
const POOL_GROUP: u16 = 0;

/// Blocking waits that skip the batch wait after the first one that did not pay.
const BATCH_BACKOFF_MIN: u32 = 16;
/// The longest run of blocking waits without a batch wait, after misses in a row.
const BATCH_BACKOFF_MAX: u32 = 1024;

/// No pool buffer lent to a slot (the fallback without a provided-buffer ring).
const NO_BID: u16 = u16::MAX;

/// Buffers the kernel's provided-buffer ring holds at first (fewer with a smaller pool): it
/// grows, doubling, each turn pooled receives wait for buffers (see `ring_target`).
const RING_START: u32 = 64;

/// No poll step done for a slot (no slot's `user_data` has this value: internal ones only).
const NO_POLL: u64 = u64::MAX;

/// A slot's mark (`IoUringBackend::marks`): a wake-up wait is in the kernel, and `reap` turns
/// its 8-byte read into the count.
const MARK_WAKEUP: u8 = 1;
/// A poll step of a pooled receive is in the kernel (the fallback's, or one with the ring
/// empty).
const MARK_POLLING: u8 = 2;
/// The fallback's receive is in the kernel with a pool buffer lent to it (`lent`).
const MARK_LENT: u8 = 4;
/// A `NOP` stands in for a file operation the loop ran itself: its result is the one in
/// `inline_results` (set by `file_entry`, whose push cannot fail: it checked for room).
const MARK_INLINE: u8 = 8;
/// A single-shot datagram step (`dgram.rs`) whose result the reap puts into the layout.
const MARK_DGRAM: u8 = 16;
/// The kernel's multishot datagram receive is in the kernel: counted in
/// `multishots` until its final completion, so that the batch wait expects a burst.
const MARK_MULTI: u8 = 32;

/// The io_uring backend's state beside the ring: per-slot timespecs (timeouts) and socket
/// addresses (connect) in the kernel's layout, the timespec of the wait timeout used on
/// kernels without `EXT_ARG`, and the waker's (blocking) eventfd, which wake-up waits read.
///
/// Everything an SQE points at lives in a heap block of its own (the boxed tables and
/// `wait_timespec`), never inline: an SQE may stay in the SQ after an enter (a failed SQE
/// ends a submission early without `SUBMIT_ALL`) and be read by the kernel at a later enter,
/// after the program has moved its `Io`. `ring` is declared first, so it is closed (and its
/// provided-buffer ring unregistered) before anything it points at is freed. Closing a ring
/// does not wait for the operations it holds, though: that the kernel no longer writes this
/// memory comes from `Io`'s drop, which reaps every operation back before the backend drops
/// (or leaks the memory).
pub(crate) struct IoUringBackend {
    ring: Ring,
    /// Per slot: a timeout's deadline on the monotonic clock, when it was pushed plus its
    /// timeout, so that the loop can put expiries reaped together in order.
    expiry_ns: Box<[u64]>,
    /// The pool's memory, kept alive for as long as the ring is registered with buffers in
    /// it: dropped after `ring` (field order), whatever order the loop drops its own fields
    /// in. `None` without a provided-buffer ring.
    #[expect(dead_code, reason = "held for its drop, never read")]
    pool_memory: Option<Rc<PoolShared>>,
    timespecs: Vec<Timespec>,
    sockaddrs: Vec<RawSockAddr>,
    /// Per slot: the message header and iovecs of a vectored send, made the first time the
    /// slot sends vectored and kept for its next ones (no allocation per send after that).
    gathers: Vec<Option<Box<Gather>>>,
    /// Per slot: a single-shot datagram step's `recvmsg` header (`dgram.rs`), made the first
    /// time the slot receives a datagram that way and kept (no allocation per step after).
    dgrams: Vec<Option<Box<DgramHdr>>>,
    /// The kernel's multishot datagram receive's header template, one for all (`dgram.rs`).
    dgram_template: Box<libc::msghdr>,
    /// Per slot: the word a wake-up wait reads the eventfd counter into.
    wakeup_words: Box<[u64]>,
    /// Per slot, while its operation is in the kernel: what its completion needs beyond the
    /// plain decoding (`MARK_*` bits; 0 for every operation but a wake-up wait, a pooled
    /// receive's steps and a file operation run inline). Set only once the SQE is in the SQ
    /// (or is sure to go in), so a push that failed leaves no trace; taken by `reap`. The
    /// one per-slot word a plain operation's reap reads.
    marks: Box<[u8]>,
    /// Per slot: the result of a file operation the loop ran itself (its opcode missing or
    /// masked), which the `NOP` standing in for it reports; `NO_INLINE` otherwise.
    inline_results: Box<[i32]>,
    /// Syscalls made running file operations inline, not yet added to `Stats::syscalls`.
    inline_syscalls: u64,
    /// The optional file opcodes the kernel runs (`UringOptions::file_opcodes`).
    file_opcodes: FileOpcodes,
    /// The loop's registered buffers, once the kernel took them: reads and writes from
    /// them are `READ_FIXED` and `WRITE_FIXED`. Held so that the memory outlives the ring.
    fixed: Option<Arc<RegisteredSet>>,
    /// The wait timeout's timespec on kernels without `EXT_ARG` (see the struct's docs for
    /// why it is boxed).
    wait_timespec: Box<Timespec>,
    ext_arg: bool,
    waker: Waker,
    /// The pool's buffers are lent to the kernel's provided-buffer ring. Without one, a
    /// pooled receive tries first, as the readiness backends do, so that a waiting receive
    /// holds no buffer: a non-blocking recv into a buffer picked at submission (recorded in
    /// `lent`; it completes at once, with data, an error, or `EAGAIN`); after `EAGAIN` (or
    /// first, when no buffer is free), a poll for readability (`POLL_ADD`) holding no
    /// buffer; then the recv again.
    pbuf_ring: bool,
    /// Per slot: the pool buffer a pooled receive was submitted with (fallback only).
    lent: Box<[u16]>,
    /// Per slot: the `user_data` of the pooled receive whose recv found nothing, so its next
    /// push is the poll (fallback only; a stale value, from an operation cancelled between
    /// the steps, never matches a later operation's `user_data`).
    poll_next: Box<[u64]>,
    /// Per slot: the `user_data` of the pooled receive whose poll found its socket readable,
    /// until it takes a buffer. A pooled receive that finds no buffer free (the fallback's
    /// pool, or the ring, empty) polls for readability first, holding none, and waits for a
    /// buffer (`PushError::NoBuffer`, or the kernel's `ENOBUFS`, which the loop counts in
    /// `Stats::pool_waits`) only once there is something to read: idle receives never wait.
    readable: Box<[u64]>,
    /// Buffers in the kernel's provided-buffer ring, as far as the loop knows: lent at
    /// start, plus those recycled, less those completions carried out.
    ring_free: u32,
    /// How many buffers the loop keeps in the kernel's ring: `RING_START` at first, doubled
    /// (up to the pool) each turn pooled receives wait for buffers. The others stay on the
    /// pool's free stack, last returned on top, so the buffers the kernel writes into are
    /// the ones just used: memory follows the load (a ring holding all 1,024 buffers cycled
    /// through every one of them, 4 MiB touched for 64-byte messages).
    ring_target: u32,
    /// The kernel has multishot receive and accept, and they are not masked.
    multishot: bool,
    /// The kernel's `SEND` takes a destination address (6.1), and multishots are not masked.
    send_addr: bool,
    /// The kernel's multishot datagram receives in flight (`MARK_MULTI`): one socket's may
    /// complete many times, so the batch wait counts on a burst while one is in (a stream's
    /// multishot receives are one per connection, counted in the operations in the kernel).
    multishots: u32,
    /// `UringOptions::batch_events`.
    batch_events: u32,
    /// `UringOptions::batch_wait_us` where the kernel has `IORING_FEAT_MIN_TIMEOUT`, `ext_arg`
    /// is on and `batch_events > 1`, else 0 (no batch wait).
    batch_wait_us: u32,
    /// The `UringFeatures::stepped_down` bits: set-up flags asked for that the kernel refused.
    stepped_down: u8,
    /// Blocking waits left that skip the batch wait, after one that gathered no more than a
    /// single completion (see `batch_wait`).
    batch_skip: u32,
    /// The skip the next miss sets: doubled by each miss, reset by a wait that pays.
    batch_backoff: u32,
}

/// Whether the kernel's `SEND` takes a destination address: it came with `SENDMSG_ZC` (6.1,
/// one patch series), and a 6.0 kernel answers an address on `SEND` with `EINVAL`. The
/// caller masks it with multishots, as polls are, so that `UringOptions::multishot` off
/// tests the `SENDMSG` path.
fn probe_send_addr(ring: &Ring) -> bool {
    ring.opcodes()
        .is_ok_and(|probe| probe.is_supported(opcode::SendMsgZc::CODE))
}

impl IoUringBackend {
    /// Sets up a ring for `options` and checks that the kernel has every opcode the loop
    /// schedules.
    pub(crate) fn new(
        options: &Options,
        pool: Option<&mut Pool>,
    ) -> Result<IoUringBackend, SetupError> {
        let uring = &options.uring;
        let slots_max = options.slots_max();
        let (mut ring, stepped_down) = ring_stepping_down(Ring::new, ring_options(options))?;
        if let Some(name) = ring.missing_required_opcode()? {
            return Err(SetupError::missing_opcode(name));
        }
        let ext_arg = uring.ext_arg && ring.has_ext_arg();
        // No batch to gather with one event: the wait is off, and reported so.
        let batch_wait_us = match ext_arg && ring.has_min_timeout() && uring.batch_events > 1 {
            true => uring.batch_wait_us,
            false => 0,
        };
        let waker = Waker::with_eventfd(false).map_err(SetupError::from_setup)?;
        // Probed before anything else is submitted: the probe needs an idle ring. Multishot
        // accept (5.19) is older than multishot receive (6.0), so one probe answers both.
        let multishot = uring.multishot && ring.probe_recv_multishot().unwrap_or(false);
        let file_opcodes = FileOpcodes::probe(&ring, uring.file_opcodes);
        let pool_count = pool.as_ref().map(|pool| pool.count());
        let pool_shared = pool.as_ref().map(|pool| Rc::clone(pool.shared()));
        let ring_start = pool_count.map_or(0, |count| u32::from(count).min(RING_START));
        let pbuf_ring = match pool {
            Some(pool) if uring.pbuf_ring => lend_pool(&mut ring, pool, ring_start),
            _ => false,
        };
        let pool_memory = pool_shared.filter(|_| pbuf_ring);
        let ring_free = if pbuf_ring { ring_start } else { 0 };
        Ok(IoUringBackend {
            stepped_down,
            expiry_ns: vec![0; slots_max as usize].into_boxed_slice(),
            ring_free,
            ring_target: ring_free,
            pbuf_ring,
            // The per-slot tables start all zero, so that they are allocated zeroed (pages the
            // kernel backs only once written: memory follows the load) and never swept: each
            // "none" is stored as 0 (`lent` keeps a buffer id plus one, `poll_next` and
            // `readable` a `user_data`'s complement).
            lent: vec![0; slots_max as usize].into_boxed_slice(),
            poll_next: vec![0; slots_max as usize].into_boxed_slice(),
            readable: vec![0; slots_max as usize].into_boxed_slice(),
            multishot,
            send_addr: multishot && probe_send_addr(&ring),
            multishots: 0,
            ring,
            pool_memory,
            // These three are filled when an operation first needs its slot's entry
            // (`slot_entry`): the capacity reserved here never moves one.
            timespecs: Vec::with_capacity(slots_max as usize),
            sockaddrs: Vec::with_capacity(slots_max as usize),
            gathers: Vec::with_capacity(slots_max as usize),
            dgrams: Vec::with_capacity(slots_max as usize),
            dgram_template: dgram::template(),
            wakeup_words: vec![0; slots_max as usize].into_boxed_slice(),
            marks: vec![0; slots_max as usize].into_boxed_slice(),
            inline_results: vec![0; slots_max as usize].into_boxed_slice(),
            inline_syscalls: 0,
            file_opcodes,
            fixed: None,
            wait_timespec: Box::new(Timespec::new()),
            ext_arg,
            batch_events: uring.batch_events,
            batch_wait_us,
            batch_skip: 0,
            batch_backoff: BATCH_BACKOFF_MIN,
            waker,
        })
    }

    /// The deadline of the timeout last pushed in slot `idx` (monotonic nanoseconds).
    pub(crate) fn expiry_ns(&self, idx: u32) -> u64 {
        self.expiry_ns[idx as usize]
    }

    /// What the loop uses of what it asked for.
    pub(crate) fn features(&self) -> UringFeatures {
        let set_up = self.ring.options();
        UringFeatures {
            single_issuer: set_up.single_issuer,
            defer_taskrun: set_up.defer_taskrun,
            coop_taskrun: set_up.coop_taskrun,
            submit_all: set_up.submit_all,
            ext_arg: self.ext_arg,
            pbuf_ring: self.pbuf_ring,
            multishot: self.multishot,
            min_timeout: self.batch_wait_us > 0,
            file_opcodes: self.file_opcodes.count(),
            registered_buffers: self.fixed.is_some(),
            stepped_down: self.stepped_down,
        }
    }

    /// The batch wait in effect, in microseconds (0: none).
    pub(crate) fn batch_wait_us(&self) -> u32 {
        self.batch_wait_us
    }

    pub(crate) fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn wakeup_fd(&self) -> RawFd {
        self.waker
            .eventfd()
            .expect("the io_uring waker is an eventfd")
    }

    /// Queues `args` as one SQE. Inlined into the loop's scheduling: a plain operation reads
    /// one per-slot mark and builds its SQE; wake-up waits and pooled receives, which need
    /// per-slot bookkeeping, go to `push_marked`.
    ///
    /// # Safety
    /// `args` must not move, and its buffers must not be touched, until `reap` reports
    /// `user_data`: the SQE points into it.
    #[inline]
    pub(crate) unsafe fn push(
        &mut self,
        idx: u32,
        user_data: u64,
        args: &mut Args,
        pool: &mut Option<Pool>,
    ) -> Result<(), PushError> {
        // Derivable, so debug-only: the loop pushes only slots just allocated or parked (their
        // states asserted), never one in the kernel, and reaping a completion takes its mark.
        debug_assert_eq!(
            self.marks[idx as usize], 0,
            "slot {idx} pushed while in the kernel"
        );
        if matches!(args, Args::RecvPooled { .. } | Args::Wakeup) {
            // SAFETY: this function's own contract, passed on.
            return unsafe { self.push_marked(idx, user_data, args, pool.as_mut()) };
        }
        // An operation run inline must find room for its `NOP` first: run, then refused, it
        // would run again when pushed again.
        if self.file_opcodes.any_inline()
            && self.file_opcodes.inline(args)
            && self.ring.sq_space() == 0
        {
            return Err(PushError::SqFull);
        }
        let mut entry = self.entry(idx, args);
        // In place: the by-value builder copied the 64-byte SQE twice more per push.
        entry.set_user_data(user_data);
        // SAFETY: the entry points into `args` (and the heap buffers it owns), or into
        // `self.timespecs[idx]`, `self.sockaddrs[idx]` or the boxed `self.gathers[idx]`
        // (which points at `args`' buffers); the caller keeps `args` in place until the
        // completion is reaped, and the tables live as long as the ring and are never resized
        // (a gather's box, once made, stays until the backend drops).
        unsafe { self.ring.push(&entry) }.map_err(|_| PushError::SqFull)
    }

    /// `push` for the operations whose completion needs per-slot bookkeeping (a mark): a
    /// wake-up wait and each step of a pooled receive.
    ///
    /// # Safety
    /// As `push`.
    #[inline(never)]
    unsafe fn push_marked(
        &mut self,
        idx: u32,
        user_data: u64,
        args: &mut Args,
        pool: Option<&mut Pool>,
    ) -> Result<(), PushError> {
        let i = idx as usize;
        assert_eq!(self.lent[i], 0, "slot {idx} pushed with a buffer lent");
        let (mut entry, polls) = match args {
            Args::RecvPooled {
                fd,
                multishot,
                datagram,
            } => {
                let pool = pool.expect("a pooled receive has a pool");
                let step = PooledStep {
                    fd: *fd,
                    multishot: *multishot,
                    datagram: *datagram,
                };
                self.pooled_entry(i, user_data, step, pool)?
            }
            Args::Wakeup => (self.entry(idx, args), false),
            _ => unreachable!("{} needs no mark", args.label()),
        };
        entry.set_user_data(user_data);
        // SAFETY: the entry points into `self.wakeup_words[idx]`, into the pool buffer lent
        // to this slot, into the slot's boxed datagram header `self.dgrams[idx]` (iovec and
        // sender, which the kernel writes back) or the boxed `self.dgram_template` (only
        // read), or nowhere (a poll, a stream receive from the provided-buffer ring). The
        // table and the boxes live as long as the ring and never move (a box keeps its heap
        // address when the vector holding it grows), and a lent pool buffer is nobody else's
        // until the completion hands it on.
        if unsafe { self.ring.push(&entry) }.is_err() {
            assert_eq!(self.lent[i], 0, "the fallback checked for room");
            return Err(PushError::SqFull);
        }
        let mark = match args {
            Args::Wakeup => MARK_WAKEUP,
            _ if polls => MARK_POLLING,
            _ => {
                // A receive is on its way: what the poll said is used up.
                self.readable[i] = !NO_POLL;
                let lent = if self.lent[i] == 0 { 0 } else { MARK_LENT };
                let kernel_multishot = self.pbuf_ring && self.multishot && args.is_multishot();
                // A datagram the kernel's multishot does not receive: the reap fixes it up.
                let datagram = matches!(args, Args::RecvPooled { datagram: true, .. });
                if kernel_multishot && datagram {
                    self.multishots += 1;
                    MARK_MULTI
                } else if datagram {
                    lent | MARK_DGRAM
                } else {
                    lent
                }
            }
        };
        self.marks[i] = mark;
        Ok(())
    }

    /// Builds the SQE for `args`. The pointers it takes are only dereferenced by the kernel,
    /// under `push`'s contract. Inlined into `push`, so that the SQE is built where it is
    /// copied from (file operations and vectored sends keep their own out-of-line builders).
    #[inline]
    fn entry(&mut self, idx: u32, args: &mut Args) -> Entry {
        match args {
            Args::Empty => unreachable!("pushing a free slot"),
            Args::Accept {
                fd,
                multishot: true,
            } if self.multishot => opcode::AcceptMulti::new(Fd(*fd))
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build(),
            Args::Accept { fd, .. } => {
                opcode::Accept::new(Fd(*fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                    .build()
            }
            Args::RecvPooled { .. } => unreachable!("built by push"),
            Args::SendPooled { fd, buf } => send_entry(*fd, buf),
            Args::Connect { fd, addr } => {
                let raw = slot_entry(&mut self.sockaddrs, idx, || RawSockAddr::UNSPECIFIED);
                *raw = RawSockAddr::new(*addr);
                let (ptr, len) = raw.as_ptr();
                opcode::Connect::new(Fd(*fd), ptr, len).build()
            }
            Args::Recv { fd, buf } => {
                let (ptr, len) = spare_capacity(buf);
                opcode::Recv::new(Fd(*fd), ptr, len).build()
            }
            Args::Send { fd, buf } => send_entry(*fd, buf),
            Args::SendVectored { fd, bufs } => self.vectored_entry(idx, *fd, bufs),
            Args::SendMsg { .. } | Args::RecvMsg { .. } => msg::entry(args, self.send_addr),
            Args::Shutdown { fd, how } => opcode::Shutdown::new(Fd(*fd), *how).build(),
            Args::Close { fd } => opcode::Close::new(Fd(fd.as_raw_fd())).build(),
            Args::Read { .. }
            | Args::Write { .. }
            | Args::ReadV { .. }
            | Args::WriteV { .. }
            | Args::Fsync { .. }
            | Args::Fallocate { .. }
            | Args::Ftruncate { .. }
            | Args::Statx { .. }
            | Args::Openat { .. }
            | Args::Renameat { .. }
            | Args::Unlinkat { .. }
            | Args::Mkdirat { .. } => self.file_entry(idx, args),
            Args::Timeout { timeout_ns } => {
                // Relative, not `IORING_TIMEOUT_ABS`: the kernel does not translate an
                // absolute time from a time namespace (`unshare --time`) to its own clock,
                // so an absolute deadline would fire early or late there. The deadline kept
                // is only the key the loop orders expiries by.
                self.expiry_ns[idx as usize] = monotonic_ns().saturating_add(*timeout_ns);
                let timespec = slot_entry(&mut self.timespecs, idx, Timespec::new);
                *timespec = timespec_from_ns(*timeout_ns);
                opcode::Timeout::new(timespec).build()
            }
            Args::Cancel { target } => opcode::AsyncCancel::new(target.user_data()).build(),
            Args::Nop => opcode::Nop::new().build(),
            Args::Poll { .. } => sqe::poll_entry(args, self.multishot),
            Args::Wakeup => {
                // The eventfd's counter lands in the backend's own per-slot word; `reap` turns
                // it into the result. Nothing is recorded here: the push may still fail.
                let ptr: *mut u64 = &mut self.wakeup_words[idx as usize];
                opcode::Read::new(Fd(self.wakeup_fd()), ptr.cast(), 8).build()
            }
        }
    }

    /// A vectored send: a `SENDMSG` from the slot's gather (made the first time), or a plain
    /// send for one buffer, which the kernel prepares for less (no header to copy in).
    fn vectored_entry(&mut self, idx: u32, fd: RawFd, bufs: &[OutBuf]) -> Entry {
        if let [buf] = bufs {
            return send_entry(fd, buf);
        }
        let gather = slot_entry(&mut self.gathers, idx, || None).get_or_insert_with(Gather::new);
        let hdr = gather.point_at(bufs);
        opcode::SendMsg::new(Fd(fd), hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }

    /// Copies out up to `max` completions for slots (internal completions are consumed
    /// here and not counted); the rest stay in the CQ for the next reap. A completion whose
    /// slot is marked (a wake-up wait, a pooled receive's step) is decoded out of line, by
    /// `Marked::result`.
    pub(crate) fn reap(
        &mut self,
        max: u32,
        mut pool: Option<&mut Pool>,
        mut f: impl FnMut(u64, i32, u32),
    ) {
        let marks = &mut self.marks;
        let mut marked = Marked {
            multishots: &mut self.multishots,
            dgrams: &self.dgrams,
            words: &self.wakeup_words,
            inline_results: &mut self.inline_results,
            lent: &mut self.lent,
            poll_next: &mut self.poll_next,
            readable: &mut self.readable,
        };
        let ring_free = &mut self.ring_free;
        self.ring.reap_max(max, |cqe| {
            if matches!(
                cqe.user_data,
                USER_DATA_WAIT_TIMEOUT | USER_DATA_DROP_CANCEL | USER_DATA_RESENT_CANCEL
            ) {
                return;
            }
            let idx = OpId::idx_of_user_data(cqe.user_data) as usize;
            let mark = std::mem::take(&mut marks[idx]);
            let result = kernel_result(cqe.result);
            // Only the buffer and more-to-come flags mean anything to the loop.
            let mut flags = cqe.flags & (F_BUFFER | crate::completion::F_MORE | 0xFFFF_0000);
            if flags & F_BUFFER == 0 {
                flags &= !0xFFFF_0000;
            } else {
                // A buffer out of the kernel's ring.
                *ring_free = ring_free.saturating_sub(1);
            }
            let (result, flags) = match mark {
                0 => (result, flags),
                _ => {
                    let (result, flags, kept) =
                        marked.result(idx, mark, cqe, result, flags, pool.as_deref_mut());
                    // A kernel multishot that goes on keeps its mark.
                    marks[idx] = kept;
                    (result, flags)
                }
            };
            f(cqe.user_data, result, flags);
        });
    }

    /// Whether completions wait in the CQ.
    pub(crate) fn has_results(&mut self) -> bool {
        self.ring.cq_len() > 0
    }

    /// Pushes a cancel of `user_data` whose result nobody receives (see
    /// `Backend::resend_cancel`); `false` when the SQ is full (the loop tries again later).
    pub(crate) fn resend_cancel(&mut self, user_data: u64, _: &mut Stats) -> bool {
        let entry = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(USER_DATA_RESENT_CANCEL);
        // SAFETY: a cancel references no memory.
        unsafe { self.ring.push(&entry) }.is_ok()
    }

    /// Asks the kernel to cancel the operation `user_data`; used only by `Io`'s drop.
    pub(crate) fn cancel_for_drop(&mut self, user_data: u64, stats: &mut Stats) -> io::Result<()> {
        if self.ring.sq_space() == 0 {
            self.enter(0, None, 0, stats)?;
        }
        let entry = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(USER_DATA_DROP_CANCEL);
        // SAFETY: a cancel references no memory.
        if unsafe { self.ring.push(&entry) }.is_err() {
            // Still no room (the CQ is overcommitted): the drop reaps what it can and waits
            // for this operation within its time limit, or leaks rather than frees.
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
