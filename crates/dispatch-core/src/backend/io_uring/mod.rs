//! The io_uring backend: every operation becomes one SQE in the shared submission queue, and
//! one `io_uring_enter` per loop turn submits them all and waits.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use sys_uring::opcode;
use sys_uring::squeue::Entry;
use sys_uring::types::{Fd, Timespec};
use sys_uring::{Ring, RingOptions, SetupError, Unavailable};

use self::file::{FileOpcodes, NO_INLINE};
use super::{PushError, Wait};
use crate::aligned::RegisteredSet;
use crate::completion::{buffer_flags, F_BUFFER};
use crate::operation::{Args, OpId};
use crate::options::Options;
use crate::outbuf::{OutBuf, GATHER_MAX};
use crate::pool::{Pool, PoolShared};
use crate::stats::{setup_flag_names, Stats, UringFeatures};
use crate::waker::Waker;

/// `user_data` values a backend uses for itself; no slot's `user_data` can equal them,
/// since slot indices are below 2^24 (`OPS_MAX_LIMIT`).
mod file;

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

/// No poll step done for a slot (no slot's `user_data` has this value: internal ones only).
const NO_POLL: u64 = u64::MAX;

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
    timespecs: Box<[Timespec]>,
    sockaddrs: Box<[RawSockAddr]>,
    /// Per slot: the message header and iovecs of a vectored send, made the first time the
    /// slot sends vectored and kept for its next ones (no allocation per send after that).
    gathers: Box<[Option<Box<Gather>>]>,
    /// Per slot: the word a wake-up wait reads the eventfd counter into.
    wakeup_words: Box<[u64]>,
    /// Per slot: a wake-up wait is in the kernel (set only once its SQE is in the SQ, so a
    /// push that failed leaves no trace), and `reap` turns its 8-byte read into the count.
    wakeup_in_kernel: Box<[bool]>,
    /// Per slot: the result of a file operation the loop ran itself (its opcode missing or
    /// masked), which the `NOP` standing in for it reports; `NO_INLINE` otherwise.
    inline_results: Box<[i32]>,
    /// Syscalls made running file operations inline, not yet added to `Stats::syscalls`.
    inline_syscalls: u64,
    /// How many `inline_results` wait for their `NOP`'s completion: while 0, the reap
    /// never looks at the table (the network hot path pays one compare per completion).
    inline_pending: u32,
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
    /// Per slot: a poll step of a pooled receive is in the kernel (the fallback's, or one
    /// with the ring empty).
    polling: Box<[bool]>,
    /// Per slot: the `user_data` of the pooled receive whose poll found its socket readable,
    /// until it takes a buffer. A pooled receive that finds no buffer free (the fallback's
    /// pool, or the ring, empty) polls for readability first, holding none, and waits for a
    /// buffer (`PushError::NoBuffer`, or the kernel's `ENOBUFS`, which the loop counts in
    /// `Stats::pool_waits`) only once there is something to read: idle receives never wait.
    readable: Box<[u64]>,
    /// Buffers in the kernel's provided-buffer ring, as far as the loop knows: lent at
    /// start, plus those recycled, less those completions carried out.
    ring_free: u32,
    /// The kernel has multishot receive and accept, and they are not masked.
    multishot: bool,
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
        // A kernel that cannot say (before 5.6) has none but the vectored pair: all inline.
        let opcodes = ring.opcodes().ok();
        let supports = |code| {
            opcodes
                .as_ref()
                .is_some_and(|probe| probe.is_supported(code))
        };
        let file_opcodes = FileOpcodes::probed(supports, uring.file_opcodes);
        let pool_count = pool.as_ref().map(|pool| pool.count());
        let pool_shared = pool.as_ref().map(|pool| Rc::clone(pool.shared()));
        let pbuf_ring = match pool {
            Some(pool) if uring.pbuf_ring => lend_pool(&mut ring, pool),
            _ => false,
        };
        let pool_memory = pool_shared.filter(|_| pbuf_ring);
        let ring_free = match (pbuf_ring, &pool_count) {
            (true, Some(count)) => u32::from(*count),
            _ => 0,
        };
        Ok(IoUringBackend {
            stepped_down,
            expiry_ns: vec![0; slots_max as usize].into_boxed_slice(),
            ring_free,
            pbuf_ring,
            lent: vec![NO_BID; slots_max as usize].into_boxed_slice(),
            poll_next: vec![NO_POLL; slots_max as usize].into_boxed_slice(),
            polling: vec![false; slots_max as usize].into_boxed_slice(),
            readable: vec![NO_POLL; slots_max as usize].into_boxed_slice(),
            multishot,
            ring,
            pool_memory,
            timespecs: (0..slots_max).map(|_| Timespec::new()).collect(),
            sockaddrs: (0..slots_max).map(|_| RawSockAddr::UNSPECIFIED).collect(),
            gathers: (0..slots_max).map(|_| None).collect(),
            wakeup_words: vec![0; slots_max as usize].into_boxed_slice(),
            wakeup_in_kernel: vec![false; slots_max as usize].into_boxed_slice(),
            inline_results: vec![NO_INLINE; slots_max as usize].into_boxed_slice(),
            inline_syscalls: 0,
            inline_pending: 0,
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

    /// Queues `args` as one SQE.
    ///
    /// # Safety
    /// `args` must not move, and its buffers must not be touched, until `reap` reports
    /// `user_data`: the SQE points into it.
    pub(crate) unsafe fn push(
        &mut self,
        idx: u32,
        user_data: u64,
        args: &mut Args,
        pool: Option<&mut Pool>,
    ) -> Result<(), PushError> {
        let i = idx as usize;
        assert_eq!(self.lent[i], NO_BID, "slot {idx} pushed with a buffer lent");
        let mut polls = false;
        let mut entry = match args {
            Args::RecvPooled { fd, multishot } => {
                let pool = pool.expect("a pooled receive has a pool");
                let (entry, poll) = self.pooled_entry(i, user_data, *fd, *multishot, pool)?;
                polls = poll;
                entry
            }
            // An operation run inline must find room for its `NOP` first: run, then refused,
            // it would run again when pushed again.
            _ if self.file_opcodes.any_inline()
                && self.file_opcodes.inline(args)
                && self.ring.sq_space() == 0 =>
            {
                return Err(PushError::SqFull);
            }
            _ => self.entry(idx, args),
        };
        // In place: the by-value builder copied the 64-byte SQE twice more per push.
        entry.set_user_data(user_data);
        // SAFETY: the entry points into `args` (and the heap buffers it owns), into
        // `self.timespecs[idx]`, `self.sockaddrs[idx]`, `self.wakeup_words[idx]` or the boxed
        // `self.gathers[idx]` (which points at `args`' buffers), or into the pool buffer lent
        // to this slot; the caller keeps `args` in place until the completion is reaped, the
        // tables live as long as the ring and are never resized (a gather's box, once made,
        // stays until the backend drops), and a lent pool buffer is nobody else's until the
        // completion hands it on.
        if unsafe { self.ring.push(&entry) }.is_err() {
            assert_eq!(self.lent[i], NO_BID, "the fallback checked for room");
            return Err(PushError::SqFull);
        }
        assert!(
            !self.wakeup_in_kernel[i] && !self.polling[i],
            "slot {idx} pushed while in the kernel"
        );
        self.polling[i] = polls;
        if !polls {
            // A receive is on its way: what the poll said is used up.
            self.readable[i] = NO_POLL;
        }
        self.wakeup_in_kernel[i] = matches!(args, Args::Wakeup);
        Ok(())
    }

    /// Builds the SQE of the next step of the pooled receive in slot `i`, and whether it is a
    /// poll for readability (which holds no buffer). With a provided-buffer ring: the
    /// receive, unless the ring is empty and the socket not known to be readable. Without
    /// (see `pbuf_ring`): the poll after a receive that found nothing, else a non-blocking
    /// receive into a buffer picked now; with no buffer free, a poll, or, once the socket is
    /// known to be readable, a wait for a buffer. The receive's pointer is only
    /// dereferenced by the kernel, under `push`'s contract.
    fn pooled_entry(
        &mut self,
        i: usize,
        user_data: u64,
        fd: RawFd,
        multishot: bool,
        pool: &mut Pool,
    ) -> Result<(Entry, bool), PushError> {
        let readable = self.readable[i] == user_data;
        let poll = || opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32).build();
        if self.pbuf_ring {
            if self.ring_free == 0 && !readable {
                return Ok((poll(), true));
            }
            let entry = if multishot && self.multishot {
                opcode::RecvMulti::new(Fd(fd), POOL_GROUP).build()
            } else {
                opcode::Recv::new(Fd(fd), std::ptr::null_mut(), pool.buffer_size())
                    .buf_group(POOL_GROUP)
                    .build()
                    .flags(sys_uring::squeue::Flags::BUFFER_SELECT)
            };
            return Ok((entry, false));
        }
        if self.poll_next[i] == user_data {
            // The last try found nothing: wait for data holding no buffer.
            self.poll_next[i] = NO_POLL;
            return Ok((poll(), true));
        }
        // Pick the buffer now (given back if the push fails) and receive without waiting.
        if self.ring.sq_space() == 0 {
            return Err(PushError::SqFull);
        }
        let Some(bid) = pool.take_free() else {
            return if readable {
                Err(PushError::NoBuffer)
            } else {
                Ok((poll(), true))
            };
        };
        self.lent[i] = bid;
        let entry = opcode::Recv::new(Fd(fd), pool.buffer_ptr(bid), pool.buffer_size())
            .flags(libc::MSG_DONTWAIT)
            .build();
        Ok((entry, false))
    }

    /// Builds the SQE for `args`. The pointers it takes are only dereferenced by the kernel,
    /// under `push`'s contract.
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
                let raw = &mut self.sockaddrs[idx as usize];
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
                let timespec = &mut self.timespecs[idx as usize];
                *timespec = timespec_from_ns(*timeout_ns);
                opcode::Timeout::new(timespec).build()
            }
            Args::Cancel { target } => opcode::AsyncCancel::new(target.user_data()).build(),
            Args::Nop => opcode::Nop::new().build(),
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
        let gather = self.gathers[idx as usize].get_or_insert_with(Gather::new);
        let hdr = gather.point_at(bufs);
        opcode::SendMsg::new(Fd(fd), hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }

    /// Submits everything pushed and waits as `wait` says, in one `io_uring_enter` (two on a
    /// kernel without `EXT_ARG` whose SQ is exactly full when a timed wait must add its
    /// timeout SQE). `in_kernel` is how many operations the kernel holds: with none, a poll
    /// that has nothing to submit makes no syscall.
    pub(crate) fn flush(
        &mut self,
        wait: Wait,
        in_kernel: u32,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.syscalls += std::mem::take(&mut self.inline_syscalls);
        let overflow = self.ring.cq_overflow();
        if overflow {
            stats.cq_overflows += 1;
        }
        let (wait_nr, timeout_ns) = match wait {
            Wait::Poll => (0, None),
            Wait::Forever => (1, None),
            Wait::Within(0) => (0, None),
            Wait::Within(left_ns) => (1, Some(left_ns)),
        };
        let needed = wait_nr > 0
            || self.ring.sq_len() > 0
            || overflow
            || (self.ring.options().defer_taskrun && in_kernel > 0);
        if !needed {
            return Ok(());
        }
        let (wait_nr, timeout_ns) = match timeout_ns {
            // No room for the timeout SQE even after an enter (the CQ is overcommitted): this
            // turn does not wait; the loop reaps and turns again.
            Some(ns) if !self.ext_arg => match self.push_wait_timeout(ns, stats)? {
                true => (wait_nr, None),
                false => (0, None),
            },
            other => (wait_nr, other),
        };
        let min_wait_us = self.batch_wait(wait_nr, timeout_ns);
        if min_wait_us == 0 {
            return self.enter(wait_nr, timeout_ns, 0, stats);
        }
        let wait_nr = self.batch_events.min(in_kernel).max(1);
        // Submitted operations that finish at once (a send, mostly) post their completions
        // during the enter: only what came in beyond those is what the wait gathered.
        let submitted = self.ring.sq_len();
        stats.batch_waits += 1;
        self.enter(wait_nr, timeout_ns, min_wait_us, stats)?;
        let gathered = self.ring.cq_len().saturating_sub(submitted);
        self.batch_paid(gathered > 1);
        Ok(())
    }

    /// The batch wait for a blocking enter, in microseconds: 0 (wait for the first
    /// completion only) unless batching is on, the wait is longer than the batch wait, and
    /// no recent batch wait went unpaid.
    fn batch_wait(&mut self, wait_nr: u32, timeout_ns: Option<u64>) -> u32 {
        if wait_nr == 0 || self.batch_wait_us == 0 {
            return 0;
        }
        if self.batch_skip > 0 {
            self.batch_skip -= 1;
            return 0;
        }
        // A wait shorter than the batch wait (a timer due soon) ends at its deadline anyway.
        match timeout_ns {
            Some(ns) if ns / 1_000 <= u64::from(self.batch_wait_us) => 0,
            _ => self.batch_wait_us,
        }
    }

    /// Learns from a batch wait: one that gathered several completions (beyond those of the
    /// operations it submitted) paid; one that brought a single completion only delayed it
    /// (a lone client in a ping-pong, whose next message waits for this reply), so the next
    /// `batch_backoff` blocking waits skip the batch wait, and each further miss doubles
    /// that (up to `BATCH_BACKOFF_MAX`). A lone client then pays the batch wait on a few of
    /// its first round trips, then on at most one in `BATCH_BACKOFF_MAX`.
    fn batch_paid(&mut self, paid: bool) {
        if paid {
            self.batch_backoff = BATCH_BACKOFF_MIN;
        } else {
            self.batch_skip = self.batch_backoff;
            self.batch_backoff = (self.batch_backoff * 2).min(BATCH_BACKOFF_MAX);
        }
    }

    /// On kernels without `EXT_ARG`: a timeout SQE that completes after `timeout_ns`, or as
    /// soon as one other completion arrives (count 1), so it never outlives the wait.
    /// `false` when the SQ had no room for it even after an enter.
    fn push_wait_timeout(&mut self, timeout_ns: u64, stats: &mut Stats) -> io::Result<bool> {
        if self.ring.sq_space() == 0 {
            self.enter(0, None, 0, stats)?;
            if self.ring.sq_space() == 0 {
                return Ok(false);
            }
        }
        *self.wait_timespec = timespec_from_ns(timeout_ns);
        let entry = opcode::Timeout::new(&*self.wait_timespec)
            .count(1)
            .build()
            .user_data(USER_DATA_WAIT_TIMEOUT);
        // SAFETY: the kernel copies the timespec while preparing the SQE, inside an enter:
        // usually the next, but a submission cut short by a failed SQE (without SUBMIT_ALL)
        // leaves this one in the SQ for a later enter, possibly after the `Io` moved. The
        // timespec is boxed, so its address does not move with the `Io`, and it is freed only
        // after the ring (field order). A later wait may rewrite it before a stale SQE is
        // read: the kernel then reads that wait's timeout, a valid timespec either way.
        let pushed = unsafe { self.ring.push(&entry) };
        assert!(pushed.is_ok(), "the SQ had room");
        Ok(true)
    }

    fn enter(
        &mut self,
        wait_nr: u32,
        timeout_ns: Option<u64>,
        min_wait_us: u32,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.syscalls += 1;
        match self.ring.enter_min_wait(wait_nr, timeout_ns, min_wait_us) {
            Ok(submitted) => {
                stats.batch_max = stats.batch_max.max(submitted);
                Ok(())
            }
            // A signal interrupted the wait: the turn ends early and the loop turns again.
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => Ok(()),
            // The CQ is overcommitted: the loop reaps, then the next turn enters again.
            Err(error) if matches!(error.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                stats.cq_overflows += 1;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Copies out up to `max` completions for slots (internal completions are consumed
    /// here and not counted); the rest stay in the CQ for the next reap.
    pub(crate) fn reap(
        &mut self,
        max: u32,
        mut pool: Option<&mut Pool>,
        mut f: impl FnMut(u64, i32, u32),
    ) {
        let words = &self.wakeup_words;
        let wakeup_in_kernel = &mut self.wakeup_in_kernel;
        let inline_results = &mut self.inline_results;
        let inline_pending = &mut self.inline_pending;
        let lent = &mut self.lent;
        let poll_next = &mut self.poll_next;
        let polling = &mut self.polling;
        let readable = &mut self.readable;
        let ring_free = &mut self.ring_free;
        self.ring.reap_max(max, |cqe| {
            if matches!(
                cqe.user_data,
                USER_DATA_WAIT_TIMEOUT | USER_DATA_DROP_CANCEL | USER_DATA_RESENT_CANCEL
            ) {
                return;
            }
            let idx = OpId::idx_of_user_data(cqe.user_data) as usize;
            let wakeup = std::mem::take(&mut wakeup_in_kernel[idx]);
            let result = match cqe.result {
                // A wake-up wait: its result is the counter the kernel read, not 8 bytes.
                8 if wakeup => i32::try_from(words[idx]).unwrap_or(i32::MAX),
                n if wakeup && n >= 0 => panic!("eventfd read of {n} bytes"),
                n => kernel_result(n),
            };
            // A file operation run inline: its `NOP` brings the result it had.
            let mut result = result;
            if *inline_pending > 0 {
                let inline = std::mem::replace(&mut inline_results[idx], NO_INLINE);
                if inline != NO_INLINE {
                    result = inline;
                    *inline_pending -= 1;
                }
            }
            // Only the buffer and more-to-come flags mean anything to the loop.
            let mut flags = cqe.flags & (F_BUFFER | crate::completion::F_MORE | 0xFFFF_0000);
            if flags & F_BUFFER == 0 {
                flags &= !0xFFFF_0000;
            } else {
                // A buffer out of the kernel's ring.
                *ring_free = ring_free.saturating_sub(1);
            }
            let bid = std::mem::replace(&mut lent[idx], NO_BID);
            if bid != NO_BID {
                // The fallback's recv: the completion carries the buffer only if bytes
                // landed; one that found nothing polls next (EINTR: the loop submits it
                // again, and it holds no buffer while it waits).
                if result > 0 {
                    flags |= buffer_flags(bid);
                } else {
                    pool.as_deref_mut()
                        .expect("a lent buffer has a pool")
                        .put_free(bid);
                }
                if result == -libc::EAGAIN {
                    poll_next[idx] = cqe.user_data;
                    result = -libc::EINTR;
                }
            } else if std::mem::take(&mut polling[idx]) && result > 0 {
                // A pooled receive's poll: readable (or hung up, or in error, which the recv
                // reports). The loop submits the operation again: its recv.
                readable[idx] = cqe.user_data;
                result = -libc::EINTR;
            }
            f(cqe.user_data, result, flags);
        });
    }

    /// Whether completions wait in the CQ.
    pub(crate) fn has_results(&mut self) -> bool {
        self.ring.cq_len() > 0
    }

    /// Gives the buffers of dropped handles back: to the kernel's ring (one release store
    /// for all of them), or among the pool's free ones in the fallback. How many.
    pub(crate) fn recycle(&mut self, pool: &mut Pool) -> u32 {
        if !self.pbuf_ring {
            return pool.take_returned_into_free();
        }
        let mut buf_ring = self.ring.buf_ring(POOL_GROUP).expect("the pool's ring");
        let size = pool.buffer_size();
        let count = pool.take_returned(|bid, ptr| {
            // SAFETY: the buffer came back from its handle: nobody else touches it until
            // the kernel hands it out again; the pool's memory lives as long as the loop.
            unsafe { buf_ring.push(bid, ptr, size) };
        });
        buf_ring.publish();
        self.ring_free += count;
        count
    }

    /// Whether a pooled receive could find a buffer now.
    pub(crate) fn buffers_available(&self, pool: &Pool) -> bool {
        if self.pbuf_ring {
            self.ring_free > 0
        } else {
            pool.has_free()
        }
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

/// The ring `options` asks for. The CQ is sized so that every slot plus the internal
/// entries fits: with one CQE per operation it cannot overflow, though overflow is still
/// handled if it does.
fn ring_options(options: &Options) -> RingOptions {
    let uring = &options.uring;
    let cq_wanted = (options.slots_max() + 8)
        .next_power_of_two()
        .clamp(uring.sq_entries * 2, 65536);
    let mut ring = RingOptions::new(uring.sq_entries);
    ring.cq_entries = cq_wanted.max(uring.sq_entries.next_power_of_two());
    ring.single_issuer = uring.single_issuer;
    ring.defer_taskrun = uring.defer_taskrun;
    ring.coop_taskrun = uring.coop_taskrun;
    ring.submit_all = uring.submit_all;
    ring
}

/// A set-up flag's field in `RingOptions`.
type SetupFlag = fn(&mut RingOptions) -> &mut bool;

/// The set-up flags a ring can ask for, oldest kernel feature first: each one's
/// `UringFeatures::stepped_down` bit and its field in `RingOptions`.
const SETUP_FLAGS_OLDEST_FIRST: [(u8, SetupFlag); 4] = [
    (UringFeatures::STEPPED_DOWN_SUBMIT_ALL, |o| {
        &mut o.submit_all
    }),
    (UringFeatures::STEPPED_DOWN_COOP_TASKRUN, |o| {
        &mut o.coop_taskrun
    }),
    (UringFeatures::STEPPED_DOWN_SINGLE_ISSUER, |o| {
        &mut o.single_issuer
    }),
    (UringFeatures::STEPPED_DOWN_DEFER_TASKRUN, |o| {
        &mut o.defer_taskrun
    }),
];

/// Creates a ring with `options`, stepping down where the kernel refuses the set-up
/// (`EINVAL`: a flag newer than the kernel): a plain ring first, then each set-up flag asked
/// for added back, oldest kernel feature first (`SUBMIT_ALL` 5.18, `COOP_TASKRUN` 5.19,
/// `SINGLE_ISSUER` 6.0, `DEFER_TASKRUN` 6.1, which needs `SINGLE_ISSUER`), keeping each the
/// kernel accepts: a kernel that lacks one flag (a backport may lack an old one and have a
/// newer one) loses only that one. Every flag is an optimisation the loop does without, so a
/// kernel that lacks one still runs io_uring. Returns the ring and the
/// `UringFeatures::stepped_down` bits of the flags given up; the first loop of the process to
/// step down says so on stderr, once. `create` is `Ring::new` (a test passes one that
/// refuses like an older kernel). Costs up to five `io_uring_setup` calls where the kernel
/// refuses something, one elsewhere.
fn ring_stepping_down(
    mut create: impl FnMut(&RingOptions) -> Result<Ring, SetupError>,
    options: RingOptions,
) -> Result<(Ring, u8), SetupError> {
    let refused = |error: &SetupError| error.unavailable == Unavailable::InvalidSetup;
    match create(&options) {
        Ok(ring) => return Ok((ring, 0)),
        Err(error) if refused(&error) => {}
        Err(error) => return Err(error),
    }
    let mut accepted = options;
    for (_, flag) in SETUP_FLAGS_OLDEST_FIRST {
        *flag(&mut accepted) = false;
    }
    // Refused with no flag at all: the sizes, or something else; not a step down.
    let mut ring = create(&accepted)?;
    let mut stepped_down = 0;
    for (bit, flag) in SETUP_FLAGS_OLDEST_FIRST {
        let mut wanted = options;
        if !*flag(&mut wanted) {
            continue;
        }
        let mut with = accepted;
        *flag(&mut with) = true;
        // DEFER_TASKRUN needs SINGLE_ISSUER: given up already if it is off by now.
        if with.defer_taskrun && !with.single_issuer {
            stepped_down |= bit;
            continue;
        }
        match create(&with) {
            Ok(bigger) => (ring, accepted) = (bigger, with),
            Err(error) if refused(&error) => stepped_down |= bit,
            Err(error) => return Err(error),
        }
    }
    assert_ne!(
        stepped_down, 0,
        "the full set was refused, so something was given up"
    );
    log_step_down(stepped_down);
    Ok((ring, stepped_down))
}

/// Says once per process which set-up flags the kernel refused.
fn log_step_down(stepped_down: u8) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        let names: Vec<&str> = setup_flag_names(stepped_down).collect();
        eprintln!(
            "dispatch-loop: this kernel refuses io_uring set-up flag(s) {}: running io_uring \
             without them",
            names.join(", ")
        );
    }
}

/// Lends every pool buffer to a provided-buffer ring registered as `POOL_GROUP`; `false`
/// (nothing lent) where the kernel has no such rings.
fn lend_pool(ring: &mut Ring, pool: &mut Pool) -> bool {
    let entries =
        u16::try_from(u32::from(pool.count()).next_power_of_two()).expect("at most 32768 buffers");
    let Ok(mut buf_ring) = sys_uring::BufRing::new(entries) else {
        return false;
    };
    let size = pool.buffer_size();
    let mut bids = Vec::with_capacity(usize::from(pool.count()));
    pool.take_all_free(|bid| bids.push(bid));
    for &bid in &bids {
        // SAFETY: every buffer is free and, from now on, the kernel's until a completion
        // hands it out; the pool's memory outlives the ring's registration: the backend holds
        // a reference to it (`pool_memory`) that is dropped only after the ring, and when the
        // kernel keeps operations past the loop's drop the loop leaks its own reference, so
        // the memory is never freed.
        unsafe { buf_ring.push(bid, pool.buffer_ptr(bid), size) };
    }
    buf_ring.publish();
    if ring.register_buf_ring(buf_ring, POOL_GROUP).is_ok() {
        return true;
    }
    for bid in bids {
        pool.put_free(bid);
    }
    false
}

/// Maps the kernel-internal errnos that io_uring lets through (517 to 530: `EPROBE_DEFER`,
/// `EOPENSTALE`, the NFS errors, `ENOTSUPP`, ...) to what a caller can act on. The restart
/// family (512 to 516) is left to the loop, which knows the operation: for a close it means
/// "performed", for anything else "cancelled".
fn kernel_result(result: i32) -> i32 {
    const EPROBE_DEFER: i32 = 517;
    const ENOTSUPP: i32 = 524;
    const ERECALLCONFLICT: i32 = 530;
    match -result {
        ENOTSUPP => -libc::EOPNOTSUPP,
        EPROBE_DEFER..=ERECALLCONFLICT => -libc::EIO,
        _ => result,
    }
}

/// A socket address in the kernel's layout, stored inline in the slot so that its address
/// stays valid while a connect is in flight.
#[derive(Clone, Copy)]
enum RawSockAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawSockAddr {
    /// An IPv4 address of all zeros, until a connect writes its own.
    const UNSPECIFIED: RawSockAddr = RawSockAddr::V4(zeroed_sockaddr_in());

    fn new(addr: SocketAddr) -> RawSockAddr {
        match addr {
            SocketAddr::V4(addr) => {
                let mut raw: libc::sockaddr_in = zeroed_sockaddr_in();
                raw.sin_family = libc::AF_INET as libc::sa_family_t;
                raw.sin_port = addr.port().to_be();
                raw.sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(addr.ip().octets()),
                };
                RawSockAddr::V4(raw)
            }
            SocketAddr::V6(addr) => {
                let mut raw: libc::sockaddr_in6 = zeroed_sockaddr_in6();
                raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                raw.sin6_port = addr.port().to_be();
                raw.sin6_flowinfo = addr.flowinfo();
                raw.sin6_addr = libc::in6_addr {
                    s6_addr: addr.ip().octets(),
                };
                raw.sin6_scope_id = addr.scope_id();
                RawSockAddr::V6(raw)
            }
        }
    }

    /// A pointer to the address and its length, for the kernel.
    fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            RawSockAddr::V4(raw) => (
                (raw as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawSockAddr::V6(raw) => (
                (raw as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

const fn zeroed_sockaddr_in() -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: 0,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        sin_len: 0,
    }
}

fn zeroed_sockaddr_in6() -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: 0,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
        sin6_scope_id: 0,
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        sin6_len: 0,
    }
}

/// A send of `bytes`. MSG_NOSIGNAL: a reset peer is an EPIPE result, never a process-killing
/// SIGPIPE.
fn send_entry(fd: RawFd, bytes: &[u8]) -> Entry {
    opcode::Send::new(Fd(fd), bytes.as_ptr(), clamp_len(bytes.len()))
        .flags(libc::MSG_NOSIGNAL)
        .build()
}

/// The `sendmsg` arguments of a vectored send: the header and the iovecs it points at, in
/// one heap block that stays put while the kernel reads them.
struct Gather {
    hdr: libc::msghdr,
    iov: [libc::iovec; GATHER_MAX],
}

impl Gather {
    fn new() -> Box<Gather> {
        // SAFETY: `msghdr` and `iovec` are plain C structs of pointers and integers, for
        // which all zeroes is a valid value (null pointers, zero lengths).
        Box::new(unsafe { std::mem::zeroed::<Gather>() })
    }

    /// Points the iovecs at the first `GATHER_MAX` buffers of `bufs` and the header at the
    /// iovecs; the kernel only reads through them.
    fn point_at(&mut self, bufs: &[OutBuf]) -> *const libc::msghdr {
        let n = bufs.len().min(GATHER_MAX);
        for (iov, buf) in self.iov.iter_mut().zip(&bufs[..n]) {
            *iov = libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            };
        }
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        // `size_t` on glibc, `int` on musl: converted, the same code on both.
        #[allow(clippy::useless_conversion)]
        let iovlen = n.try_into().expect("GATHER_MAX fits msg_iovlen");
        self.hdr.msg_iovlen = iovlen;
        &self.hdr
    }
}

/// The spare capacity of `buf` as the kernel's (pointer, length).
fn spare_capacity(buf: &mut Vec<u8>) -> (*mut u8, u32) {
    let spare = buf.spare_capacity_mut();
    (spare.as_mut_ptr().cast(), clamp_len(spare.len()))
}

/// io_uring lengths are `u32`; a longer buffer is a short operation, which callers handle.
fn clamp_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// `CLOCK_MONOTONIC` in nanoseconds (vDSO, no syscall).
fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).expect("the monotonic clock is not negative");
    let nanos = u64::try_from(now.tv_nsec).expect("nanoseconds below 1e9");
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn timespec_from_ns(ns: u64) -> Timespec {
    std::time::Duration::from_nanos(ns).into()
}

#[cfg(test)]
mod tests {
    use std::borrow::Borrow;

    use super::*;

    /// A backend on this kernel, or `None` (saying why) where io_uring is unusable.
    fn backend_or_skip(options: &Options, pool: Option<&mut Pool>) -> Option<IoUringBackend> {
        match IoUringBackend::new(options, pool) {
            Ok(backend) => Some(backend),
            Err(error) => {
                eprintln!("skipped: {error}");
                None
            }
        }
    }

    /// Where a timespec field's timespec lives, boxed or not.
    fn address<T: Borrow<Timespec>>(field: &T) -> *const Timespec {
        field.borrow()
    }

    /// The wait timeout's SQE may be read by the kernel at an enter after the `Io` moved (a
    /// submission cut short by a failed SQE leaves it in the SQ): what it points at must not
    /// move with the backend.
    #[test]
    fn the_wait_timeout_timespec_does_not_move_with_the_backend() {
        let Some(backend) = backend_or_skip(&Options::new(8), None) else {
            return;
        };
        let before = address(&backend.wait_timespec);
        let moved = Box::new(backend);
        assert_eq!(address(&moved.wait_timespec), before);
        assert_eq!(address(&moved.wait_timespec), before, "and again");
    }

    fn einval() -> SetupError {
        SetupError::from_setup(io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// Every set-up flag on.
    fn wanted() -> RingOptions {
        let mut options = RingOptions::new(8);
        for (_, flag) in SETUP_FLAGS_OLDEST_FIRST {
            *flag(&mut options) = true;
        }
        options
    }

    /// A kernel that refuses the newer set-up flags (`EINVAL`, as 5.10 refuses
    /// `SINGLE_ISSUER`, `DEFER_TASKRUN` and `SUBMIT_ALL`) still gets a ring, with the flags
    /// it has.
    #[test]
    fn a_refused_set_up_flag_is_given_up_not_io_uring() {
        // A 5.18 kernel, as far as flags go: SUBMIT_ALL only.
        let mut tries = Vec::new();
        let older = |options: &RingOptions| {
            tries.push(*options);
            match options.single_issuer || options.defer_taskrun || options.coop_taskrun {
                true => Err(einval()),
                false => Ring::new(options),
            }
        };
        let (ring, stepped_down) = match ring_stepping_down(older, wanted()) {
            Ok(created) => created,
            Err(error) => return eprintln!("skipped: {error}"),
        };
        // All, plain, +SUBMIT_ALL, +COOP_TASKRUN, +SINGLE_ISSUER (DEFER_TASKRUN needs it).
        assert_eq!(tries.len(), 5);
        assert!(ring.options().submit_all, "the flag the kernel has is kept");
        assert!(!ring.options().single_issuer && !ring.options().defer_taskrun);
        let names: Vec<_> = setup_flag_names(stepped_down).collect();
        assert_eq!(
            names,
            [
                "IORING_SETUP_DEFER_TASKRUN",
                "IORING_SETUP_SINGLE_ISSUER",
                "IORING_SETUP_COOP_TASKRUN"
            ]
        );
        // Anything else the kernel refuses is an error, not a step down.
        let refuse = |_: &RingOptions| {
            Err(SetupError::from_setup(io::Error::from_raw_os_error(
                libc::EPERM,
            )))
        };
        assert!(ring_stepping_down(refuse, wanted()).is_err());
    }

    /// A kernel lacking an old flag but having the newer ones (a backport) loses only the
    /// one it lacks.
    #[test]
    fn only_the_refused_flag_is_given_up() {
        let backported = |options: &RingOptions| match options.submit_all {
            true => Err(einval()),
            false => Ring::new(options),
        };
        let (ring, stepped_down) = match ring_stepping_down(backported, wanted()) {
            Ok(created) => created,
            Err(error) => return eprintln!("skipped: {error}"),
        };
        assert_eq!(stepped_down, UringFeatures::STEPPED_DOWN_SUBMIT_ALL);
        let kept = ring.options();
        assert!(kept.single_issuer && kept.defer_taskrun && kept.coop_taskrun);
        assert!(!kept.submit_all);
    }

    /// While the provided-buffer ring names the pool's buffers, the backend itself keeps the
    /// pool's memory alive, so the loop's field order cannot free it first.
    #[test]
    fn the_backend_keeps_the_pool_memory_its_ring_names() {
        let mut pool = Pool::new(4, 64);
        let Some(backend) = backend_or_skip(&Options::new(8), Some(&mut pool)) else {
            return;
        };
        if !backend.pbuf_ring {
            return eprintln!("skipped: no provided-buffer ring on this kernel");
        }
        let shared = Rc::clone(pool.shared());
        assert_eq!(
            Rc::strong_count(&shared),
            3,
            "the pool, the backend, this test"
        );
        drop(pool);
        assert_eq!(Rc::strong_count(&shared), 2, "the backend holds it still");
        drop(backend);
        assert_eq!(Rc::strong_count(&shared), 1, "released with the ring");
    }
}
