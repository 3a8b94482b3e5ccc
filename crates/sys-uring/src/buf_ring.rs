//! `BufRing`: a provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19): a ring of
//! `{addr, len, bid}` entries through which the application lends buffers to the kernel,
//! which picks one when data arrives for an operation submitted with `IOSQE_BUFFER_SELECT`
//! and names it in the completion (`IORING_CQE_F_BUFFER`, buffer id in `flags >> 16`).
//!
//! The ring memory is page-aligned and owned here; [`crate::Ring::register_buf_ring`] takes
//! the ring over and unregisters it before freeing it. The tail lives in entry 0's reserved
//! field: entries are written field by field, never whole.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The most entries a ring may have (the kernel's limit).
pub const BUF_RING_ENTRIES_MAX: u16 = 32768;

/// A provided-buffer ring: `entries` slots, a power of two.
pub struct BufRing {
    base: NonNull<BufRingEntry>,
    layout: Layout,
    entries: u16,
    /// The tail as published to the kernel.
    tail: u16,
    /// Entries written since the last publish.
    pending: u16,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("entries", &self.entries)
            .field("tail", &self.tail)
            .field("pending", &self.pending)
            .finish()
    }
}

impl BufRing {
    /// Allocates a zeroed, page-aligned ring of `entries` slots (a power of two, at most
    /// [`BUF_RING_ENTRIES_MAX`]).
    ///
    /// # Errors
    /// `EINVAL` for a bad count; `ENOMEM` when the allocation fails.
    pub fn new(entries: u16) -> io::Result<BufRing> {
        if entries == 0 || !entries.is_power_of_two() || entries > BUF_RING_ENTRIES_MAX {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let size = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(size, page.max(4096))
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the layout has a non-zero size (entries > 0).
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(base.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(BufRing {
            base,
            layout,
            entries,
            tail: 0,
            pending: 0,
        })
    }

    /// The ring's slot count.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// The ring's address, for registration.
    pub(crate) fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Writes one buffer into the next free slot; the kernel sees it after [`BufRing::publish`].
    ///
    /// # Safety
    /// `addr..addr + len` must stay valid and must not be read or written by anyone else from
    /// now until the kernel hands buffer `bid` back in a completion: the kernel may write
    /// into it at any time. Neither unregistering the ring nor dropping the [`crate::Ring`]
    /// ends that: an operation that took the buffer before may still be writing it after
    /// the ring is closed (its completion is never seen then), so a buffer whose completion
    /// was not reaped must never be freed. The caller never has more
    /// buffers lent than the ring has entries.
    pub unsafe fn push(&mut self, bid: u16, addr: *mut u8, len: u32) {
        assert!(
            self.pending < self.entries,
            "more buffers than ring entries"
        );
        let mask = self.entries - 1;
        let slot = usize::from(self.tail.wrapping_add(self.pending) & mask);
        // SAFETY: `slot < entries`, so the entry lies in the allocation. The kernel only reads
        // entries between its head and the published tail; this one is past the tail. Fields
        // are set one by one: entry 0's `resv` is the tail and must not be overwritten.
        let entry = unsafe { &mut *self.base.as_ptr().add(slot) };
        entry.set_addr(addr as u64);
        entry.set_len(len);
        entry.set_bid(bid);
        self.pending += 1;
    }

    /// Publishes every entry pushed since the last call: one release store of the tail.
    pub fn publish(&mut self) {
        if self.pending == 0 {
            return;
        }
        self.tail = self.tail.wrapping_add(self.pending);
        self.pending = 0;
        // SAFETY: the tail is entry 0's reserved field, a properly aligned u16 within the
        // allocation, shared with the kernel, which reads it with an acquire load.
        let tail = unsafe { &*BufRingEntry::tail(self.base.as_ptr()).cast::<AtomicU16>() };
        // Release: the entries written above are visible to the kernel before the tail that
        // covers them (io_uring_buf_ring_advance does the same).
        tail.store(self.tail, Ordering::Release);
    }
}

/// A registered [`BufRing`], lent by its [`crate::Ring`] ([`crate::Ring::buf_ring`]): it
/// pushes and publishes buffers, and nothing else. It never gives out the `BufRing` itself,
/// so safe code cannot move a registered ring out of its `Ring` (`mem::swap`,
/// `mem::replace`) and free memory the kernel still reads.
pub struct BufRingMut<'ring> {
    ring: &'ring mut BufRing,
}

impl<'ring> BufRingMut<'ring> {
    pub(crate) fn new(ring: &'ring mut BufRing) -> BufRingMut<'ring> {
        BufRingMut { ring }
    }

    /// The ring's slot count.
    pub fn entries(&self) -> u16 {
        self.ring.entries()
    }

    /// [`BufRing::push`] on the registered ring.
    ///
    /// # Safety
    /// As [`BufRing::push`]: `addr..addr + len` stays valid and untouched by anyone else
    /// until the kernel hands buffer `bid` back in a completion (not merely until the ring is
    /// unregistered or dropped), and no more buffers are lent than the ring has entries.
    #[inline]
    pub unsafe fn push(&mut self, bid: u16, addr: *mut u8, len: u32) {
        // SAFETY: the caller upholds `BufRing::push`'s contract, which this one repeats.
        unsafe { self.ring.push(bid, addr, len) }
    }

    /// [`BufRing::publish`]: the kernel sees every entry pushed since the last call.
    #[inline]
    pub fn publish(&mut self) {
        self.ring.publish();
    }
}

impl std::fmt::Debug for BufRingMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BufRingMut").field(&self.ring).finish()
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the owner (`Ring`) unregisters the ring
        // before dropping it, so the kernel no longer reads it.
        unsafe { std::alloc::dealloc(self.base.as_ptr().cast(), self.layout) };
    }
}
