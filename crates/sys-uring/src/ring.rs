//! `Ring`: one io_uring instance with explicit set-up options, a push that keeps the kernel's
//! buffer contract `unsafe`, one `enter` that submits and waits, and a reap that copies CQEs out.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{squeue, IoUring};

use crate::buf_ring::{BufRing, BufRingMut};
use crate::error::SetupError;

/// The longest [`Ring::enter_min_wait`] waits when it has a batch wait: one hour. The
/// kernel treats a minimum wait without a general timeout (or with one it clamps to
/// "forever") as a wait that ends when the minimum does.
pub const MIN_WAIT_TIMEOUT_CAP_NS: u64 = 3_600_000_000_000;

/// How to set up a ring. Every flag is probed by the kernel at set-up: a flag it does not know
/// makes [`Ring::new`] fail with [`crate::Unavailable::InvalidSetup`]; [`crate::probe`] says
/// beforehand which flags are accepted.
///
/// `#[non_exhaustive]`, so that a new set-up flag is not a breaking change: start from
/// [`RingOptions::new`] and set fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingOptions {
    /// Submission queue entries (rounded up to a power of two by the kernel).
    pub sq_entries: u32,
    /// Completion queue entries; 0 keeps the kernel's default of twice `sq_entries`.
    pub cq_entries: u32,
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0): only the creating thread submits.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1): completion work runs only when this thread enters
    /// the kernel to wait. Requires `single_issuer`.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19): no interrupting IPIs for completion work.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL` (5.18): keep submitting a batch past an SQE that fails.
    pub submit_all: bool,
}

impl RingOptions {
    /// A ring of `sq_entries` with the kernel's default CQ size and no optional flags.
    pub const fn new(sq_entries: u32) -> RingOptions {
        RingOptions {
            sq_entries,
            cq_entries: 0,
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: false,
            submit_all: false,
        }
    }
}

/// The submission queue has no free entry; submit (enter) and push again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqFull;

impl std::fmt::Display for SqFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("io_uring submission queue is full")
    }
}

impl std::error::Error for SqFull {}

/// One completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    /// The `user_data` of the SQE this completes.
    pub user_data: u64,
    /// The result: non-negative on success, `-errno` on failure.
    pub result: i32,
    /// `IORING_CQE_F_*` flags.
    pub flags: u32,
}

/// An io_uring instance: submission and completion queues shared with the kernel.
pub struct Ring {
    uring: IoUring,
    options: RingOptions,
    /// The provided-buffer rings registered with this ring, by group id; unregistered in
    /// `Drop` before their memory is freed. Never handed out as `&mut BufRing` (only as a
    /// [`BufRingMut`]), so safe code cannot swap a registered ring out and free it.
    buf_rings: Vec<(u16, BufRing)>,
    /// An SQE has been pushed: the ring may hold operations, so it can no longer be probed
    /// ([`Ring::probe_recv_multishot`]).
    pushed: bool,
    /// The answer of [`Ring::probe_recv_multishot`], once asked.
    recv_multishot: Option<bool>,
}

impl Ring {
    /// `io_uring_setup(2)`—creates a ring with exactly the flags in `options`.
    ///
    /// # Errors
    /// A [`SetupError`] whose [`crate::Unavailable`] says why, in words a user can act on.
    ///
    /// # References
    /// - [Linux](https://man7.org/linux/man-pages/man2/io_uring_setup.2.html)
    pub fn new(options: &RingOptions) -> Result<Ring, SetupError> {
        assert!(options.sq_entries > 0, "a ring needs at least one SQ entry");
        assert!(
            !options.defer_taskrun || options.single_issuer,
            "IORING_SETUP_DEFER_TASKRUN requires IORING_SETUP_SINGLE_ISSUER"
        );
        let mut builder = IoUring::builder();
        if options.cq_entries > 0 {
            assert!(
                options.cq_entries >= options.sq_entries,
                "CQ smaller than SQ"
            );
            builder.setup_cqsize(options.cq_entries);
        }
        if options.single_issuer {
            builder.setup_single_issuer();
        }
        if options.defer_taskrun {
            builder.setup_defer_taskrun();
        }
        if options.coop_taskrun {
            builder.setup_coop_taskrun();
        }
        if options.submit_all {
            builder.setup_submit_all();
        }
        let uring = builder
            .build(options.sq_entries)
            .map_err(SetupError::from_setup)?;
        Ok(Ring {
            uring,
            options: *options,
            buf_rings: Vec::new(),
            pushed: false,
            recv_multishot: None,
        })
    }

    /// `IORING_REGISTER_PBUF_RING` (5.19)—registers `buf_ring` as buffer group `bgid`; the
    /// ring keeps it (reach it with [`Ring::buf_ring`]) and unregisters it when dropped.
    ///
    /// # Errors
    /// `EINVAL` on kernels before 5.19 (or a group id already in use), `ENOMEM`, ...
    ///
    /// # References
    /// - [Linux](https://man7.org/linux/man-pages/man3/io_uring_register_buf_ring.3.html)
    pub fn register_buf_ring(&mut self, buf_ring: BufRing, bgid: u16) -> io::Result<()> {
        assert!(
            self.buf_rings.iter().all(|(id, _)| *id != bgid),
            "buffer group {bgid} registered twice"
        );
        // SAFETY: the ring memory (page-aligned, `entries` slots) is owned by `buf_ring`,
        // which this ring keeps until `Drop` has unregistered the group.
        unsafe {
            self.uring.submitter().register_buf_ring_with_flags(
                buf_ring.addr(),
                buf_ring.entries(),
                bgid,
                0,
            )?;
        }
        self.buf_rings.push((bgid, buf_ring));
        Ok(())
    }

    /// Registers `buffers` as the ring's fixed buffers (`IORING_REGISTER_BUFFERS`, 5.1), for
    /// `READ_FIXED` and `WRITE_FIXED` by index. The kernel pins their pages.
    ///
    /// # Safety
    /// The memory the iovecs describe must stay allocated until the ring is dropped, and a
    /// fixed operation must only name an index with an address range inside that buffer.
    ///
    /// # Errors
    /// `ENOMEM` (the locked-memory limit, on kernels before 5.12 counted against
    /// `RLIMIT_MEMLOCK`), `EBUSY` if buffers are already registered, `EINVAL`, ...
    pub unsafe fn register_buffers(&mut self, buffers: &[libc::iovec]) -> io::Result<()> {
        // SAFETY: the caller's contract: the memory outlives the ring.
        unsafe { self.uring.submitter().register_buffers(buffers) }
    }

    /// The provided-buffer ring registered as group `bgid`, as a handle that pushes and
    /// publishes buffers and can do nothing else: the ring itself stays this `Ring`'s until
    /// it is dropped, so the memory the kernel reads is never freed while registered.
    ///
    /// ```compile_fail,E0308
    /// # use sys_uring::{BufRing, Ring, RingOptions};
    /// let mut ring = Ring::new(&RingOptions::new(8)).unwrap();
    /// ring.register_buf_ring(BufRing::new(4).unwrap(), 7).unwrap();
    /// let mut other = BufRing::new(4).unwrap();
    /// // Would free the registered ring's memory while the kernel reads it: no such access.
    /// std::mem::swap(ring.buf_ring(7).unwrap(), &mut other);
    /// ```
    pub fn buf_ring(&mut self, bgid: u16) -> Option<BufRingMut<'_>> {
        self.buf_rings
            .iter_mut()
            .find(|(id, _)| *id == bgid)
            .map(|(_, ring)| BufRingMut::new(ring))
    }

    /// Whether the kernel has multishot receive (`IORING_RECV_MULTISHOT`, 6.0), asked the
    /// only way it can be: a multishot recv on a socket pair from a buffer group that does
    /// not exist completes with `ENOBUFS` where the kernel has it and `EINVAL` where it does
    /// not. One `io_uring_enter`.
    ///
    /// The kernel is asked once, before anything else is pushed to this ring (so that every
    /// completion is the probe's); the answer is kept, and later calls return it.
    /// Provided-buffer rings may be registered already.
    ///
    /// # Errors
    /// `EBUSY` when the first call comes after something was pushed to this ring; creating
    /// the socket pair or entering the ring failed.
    pub fn probe_recv_multishot(&mut self) -> io::Result<bool> {
        const PROBE_USER_DATA: u64 = u64::MAX - 7;
        if let Some(answer) = self.recv_multishot {
            return Ok(answer);
        }
        if self.pushed {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        assert_eq!(self.sq_len(), 0, "nothing pushed, nothing queued");
        assert_eq!(self.cq_len(), 0, "nothing pushed, nothing completed");
        // A group with no buffers: one that is not registered (fewer than 65536 are).
        let no_such_group = (0..=u16::MAX)
            .rev()
            .find(|bgid| self.buf_rings.iter().all(|(id, _)| id != bgid))
            .expect("at most a few buffer groups are registered");
        let (a, _b) = std::os::unix::net::UnixStream::pair()?;
        let entry =
            io_uring::opcode::RecvMulti::new(io_uring::types::Fd(a.as_raw_fd()), no_such_group)
                .build()
                .user_data(PROBE_USER_DATA);
        // SAFETY: the recv selects its buffer from a group (none exists), so the SQE points
        // at no memory of ours; the socket outlives the wait below.
        unsafe { self.push(&entry) }.map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))?;
        self.enter(1, None)?;
        let mut result = None;
        self.reap(|cqe| {
            assert_eq!(
                cqe.user_data, PROBE_USER_DATA,
                "the probe runs on a ring nothing else was pushed to"
            );
            result = Some(cqe.result);
        });
        let answer = result == Some(-libc::ENOBUFS);
        self.recv_multishot = Some(answer);
        Ok(answer)
    }

    /// The options this ring was created with.
    pub fn options(&self) -> &RingOptions {
        &self.options
    }

    /// Whether the kernel has `IORING_FEAT_EXT_ARG` (5.11): `enter` can wait with a timeout.
    pub fn has_ext_arg(&self) -> bool {
        self.uring.params().is_feature_ext_arg()
    }

    /// Whether the kernel has `IORING_FEAT_MIN_TIMEOUT` (6.12): `enter` can batch-wait
    /// ([`Ring::enter_min_wait`]).
    pub fn has_min_timeout(&self) -> bool {
        self.uring.params().is_feature_min_timeout()
    }

    /// Whether the kernel has `IORING_FEAT_NODROP` (5.5): a full CQ buffers rather than drops.
    pub fn has_nodrop(&self) -> bool {
        self.uring.params().is_feature_nodrop()
    }

    /// Submission queue size, as the kernel rounded it.
    pub fn sq_capacity(&self) -> u32 {
        self.uring.params().sq_entries()
    }

    /// Completion queue size, as the kernel rounded it.
    pub fn cq_capacity(&self) -> u32 {
        self.uring.params().cq_entries()
    }

    /// `IORING_REGISTER_PROBE`—the opcodes this ring's kernel supports.
    ///
    /// # Errors
    /// `EINVAL` on kernels before 5.6, which cannot say.
    pub fn opcodes(&self) -> io::Result<io_uring::Probe> {
        let mut opcodes = io_uring::Probe::new();
        self.uring.submitter().register_probe(&mut opcodes)?;
        Ok(opcodes)
    }

    /// The first of [`crate::REQUIRED_OPCODES`] this kernel lacks, if any.
    ///
    /// # Errors
    /// When the kernel cannot report its opcodes (before 5.6, which lacks several anyway).
    pub fn missing_required_opcode(&self) -> Result<Option<&'static str>, SetupError> {
        let opcodes = self.opcodes().map_err(SetupError::from_setup)?;
        Ok(crate::probe::first_missing(&opcodes))
    }

    /// Free SQ entries.
    #[inline]
    pub fn sq_space(&mut self) -> u32 {
        let sq = self.uring.submission();
        let space = sq.capacity() - sq.len();
        u32::try_from(space).expect("SQ capacity fits u32")
    }

    /// SQ entries pushed and not yet consumed by the kernel.
    #[inline]
    pub fn sq_len(&mut self) -> u32 {
        u32::try_from(self.uring.submission().len()).expect("SQ length fits u32")
    }

    /// Pushes one SQE; it reaches the kernel with the next [`Ring::enter`].
    ///
    /// # Safety
    /// Every pointer in `entry` (buffers, addresses, timespecs, paths) must stay valid, and
    /// every buffer the kernel writes must not be read or moved by anyone else, until the
    /// completion carrying `entry`'s `user_data` has been reaped.
    #[inline]
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<(), SqFull> {
        self.pushed = true;
        let mut sq = self.uring.submission();
        // SAFETY: the caller upholds the buffer contract, as this function's own contract says.
        unsafe { sq.push(entry) }.map_err(|_| SqFull)
    }

    /// `io_uring_enter(2)`—submits every pushed SQE and, when `wait_nr > 0`, waits until that
    /// many completions are ready or `timeout_ns` passes. One syscall.
    ///
    /// A timeout needs `IORING_FEAT_EXT_ARG` ([`Ring::has_ext_arg`]); without it the caller
    /// pushes a timeout SQE instead. An expired timeout is `Ok`, not `ETIME`.
    ///
    /// # Errors
    /// The kernel's: `EBUSY`/`EAGAIN` when the CQ is overcommitted (reap, then enter again),
    /// `EINTR` when a signal arrived while waiting (enter again).
    ///
    /// # References
    /// - [Linux](https://man7.org/linux/man-pages/man2/io_uring_enter.2.html)
    pub fn enter(&mut self, wait_nr: u32, timeout_ns: Option<u64>) -> io::Result<u32> {
        self.enter_min_wait(wait_nr, timeout_ns, 0)
    }

    /// [`Ring::enter`] with a batch wait (6.12, [`Ring::has_min_timeout`]): wait up to
    /// `min_wait_us` for `wait_nr` completions; once it passes, return as soon as at least one
    /// is ready, else keep waiting for the first until `timeout_ns`. `min_wait_us == 0` is a
    /// plain [`Ring::enter`].
    ///
    /// With a batch wait, a missing or very long `timeout_ns` waits at most
    /// [`MIN_WAIT_TIMEOUT_CAP_NS`] (the caller enters again): the kernel ends a minimum wait
    /// that has no general timeout with nothing (`ETIME`), which would wake an idle loop
    /// every `min_wait_us`.
    ///
    /// # Errors
    /// As [`Ring::enter`].
    ///
    /// # Panics
    /// If `min_wait_us > 0` on a ring without `IORING_FEAT_MIN_TIMEOUT`.
    pub fn enter_min_wait(
        &mut self,
        wait_nr: u32,
        timeout_ns: Option<u64>,
        min_wait_us: u32,
    ) -> io::Result<u32> {
        let to_submit = self.sq_len();
        let mut flags = 0;
        // Deferred task work only runs, and overflowed CQEs only flush, in an enter that
        // carries GETEVENTS; with a zero `wait_nr` it does not block.
        if wait_nr > 0 || self.options.defer_taskrun || self.cq_overflow() {
            flags |= io_uring::EnterFlags::GETEVENTS.bits();
        }
        assert!(
            min_wait_us == 0 || self.has_min_timeout(),
            "a batch wait needs IORING_FEAT_MIN_TIMEOUT"
        );
        let result = if timeout_ns.is_none() && min_wait_us == 0 {
            // SAFETY: no extended argument is passed; the SQEs were pushed under `push`'s
            // contract, which keeps their memory valid until reaped.
            unsafe {
                self.uring
                    .submitter()
                    .enter::<libc::sigset_t>(to_submit, wait_nr, flags, None)
            }
        } else {
            assert!(
                self.has_ext_arg(),
                "a wait timeout needs IORING_FEAT_EXT_ARG"
            );
            // Here a timeout is given, or a batch wait is: that one gets a capped timeout.
            let timeout_ns = match timeout_ns {
                Some(ns) if min_wait_us == 0 => ns,
                other => other.map_or(MIN_WAIT_TIMEOUT_CAP_NS, |ns| {
                    ns.min(MIN_WAIT_TIMEOUT_CAP_NS)
                }),
            };
            let timespec = timespec_from_ns(timeout_ns);
            let args = SubmitArgs::new()
                .min_wait_usec(min_wait_us)
                .timespec(&timespec);
            flags |= io_uring::EnterFlags::EXT_ARG.bits();
            // SAFETY: `args` is a valid `io_uring_getevents_arg` (its timespec is `timespec`,
            // alive on this stack frame) that outlives the call, and EXT_ARG tells the kernel
            // that is what the argument is.
            unsafe {
                self.uring
                    .submitter()
                    .enter(to_submit, wait_nr, flags, Some(&args))
            }
        };
        match result {
            Ok(submitted) => Ok(u32::try_from(submitted).expect("submitted fits u32")),
            Err(error) if error.raw_os_error() == Some(libc::ETIME) => Ok(0),
            Err(error) => Err(error),
        }
    }

    /// Whether the kernel holds completions that did not fit the CQ (`IORING_SQ_CQ_OVERFLOW`);
    /// the next [`Ring::enter`] flushes them.
    #[inline]
    pub fn cq_overflow(&mut self) -> bool {
        self.uring.submission().cq_overflow()
    }

    /// Completions the kernel dropped because the CQ was full (only without NODROP).
    pub fn cq_dropped(&mut self) -> u32 {
        self.uring.completion().overflow()
    }

    /// Completions ready in the CQ.
    #[inline]
    pub fn cq_len(&mut self) -> u32 {
        u32::try_from(self.uring.completion().len()).expect("CQ length fits u32")
    }

    /// Copies at most `max` ready completions out of the CQ, in order, calling `f` for each;
    /// the rest stay for the next call. Returns how many. Never blocks and makes no syscall.
    #[inline]
    pub fn reap_max(&mut self, max: u32, mut f: impl FnMut(Cqe)) -> u32 {
        let mut count = 0;
        for entry in self.uring.completion().take(max as usize) {
            count += 1;
            f(Cqe {
                user_data: entry.user_data(),
                result: entry.result(),
                flags: entry.flags(),
            });
        }
        count
    }

    /// Copies every ready completion out of the CQ, in order, calling `f` for each, and
    /// returns how many. Never blocks and makes no syscall.
    #[inline]
    pub fn reap(&mut self, f: impl FnMut(Cqe)) -> u32 {
        self.reap_max(u32::MAX, f)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        for (bgid, _) in &self.buf_rings {
            // Nothing to do about a failure: closing the ring drops the registration anyway.
            let _ = self.uring.submitter().unregister_buf_ring(*bgid);
        }
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.uring.as_raw_fd()
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.as_raw_fd())
            .field("options", &self.options)
            .finish()
    }
}

/// A relative or absolute kernel timespec from nanoseconds.
pub(crate) fn timespec_from_ns(ns: u64) -> Timespec {
    const NS_PER_S: u64 = 1_000_000_000;
    let nsec = u32::try_from(ns % NS_PER_S).expect("remainder below 1e9 fits u32");
    Timespec::new().sec(ns / NS_PER_S).nsec(nsec)
}
