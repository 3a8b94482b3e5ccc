//! The receive buffer pool: fixed-size buffers allocated once at `Io::new`, picked only when
//! data arrives (so an idle receive pins none), lent to callbacks as [`PoolBuf`] handles, and
//! back in the pool when the handle is dropped.
//!
//! Why a handle that returns itself on drop rather than `Vec<u8>` and `give_back`: dropping is
//! what a program does anyway, so a buffer can never be lost by forgetting a call, and the
//! pool never has to guess which buffers went missing. The handle keeps the pool's memory
//! alive (`Rc`), so it may outlive the loop; it is not `Send`, like the loop. Returning costs
//! one push onto a preallocated list: no allocation, no syscall. A handle that is leaked
//! (`mem::forget`) takes its buffer out of the pool for good: the pool shrinks, it is never
//! unsound.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

/// The bid of an empty handle (end of stream), which owns no buffer.
const NO_BUFFER: u16 = u16::MAX;

/// The pool's memory and the list of buffers handed back since the loop last looked.
pub(crate) struct PoolShared {
    base: NonNull<u8>,
    layout: Layout,
    buffer_size: u32,
    count: u16,
    /// Buffers whose handles were dropped; never longer than `count` (each buffer is lent at
    /// most once at a time), so it never grows past its initial capacity.
    returned: RefCell<Vec<u16>>,
}

impl PoolShared {
    /// Lends buffer `bid`, holding `len` bytes the kernel or a recv wrote, to the program.
    pub(crate) fn lend(self: &Rc<Self>, bid: u16, len: u32) -> PoolBuf {
        assert!(bid < self.count);
        assert!(len <= self.buffer_size, "more bytes than the buffer holds");
        PoolBuf {
            pool: Rc::clone(self),
            bid,
            start: 0,
            end: len,
        }
    }

    /// An empty handle: end of stream.
    pub(crate) fn end_of_stream(self: &Rc<Self>) -> PoolBuf {
        PoolBuf {
            pool: Rc::clone(self),
            bid: NO_BUFFER,
            start: 0,
            end: 0,
        }
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // SAFETY: allocated in `Pool::new` with this layout. The last `Rc` is gone: no handle
        // reads it, and the loop drops its own reference only once the kernel holds no
        // operation that could write into it (or leaks it: see `Pool::leak`).
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

/// Bytes received into a pool buffer, lent to the program: it reads (and may modify) them
/// through `Deref<Target = [u8]>`, may narrow the view with [`PoolBuf::advance`] (after a
/// short send, say), and gives the buffer back to the pool by dropping the handle. An empty
/// handle (no bytes) marks the end of a stream and holds no buffer.
pub struct PoolBuf {
    pool: Rc<PoolShared>,
    bid: u16,
    start: u32,
    end: u32,
}

impl PoolBuf {
    /// Bytes in view.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether no byte is in view (an end-of-stream handle, or everything advanced over).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops the first `n` bytes from the view (for example the part a short send sent).
    ///
    /// # Panics
    /// When `n` exceeds [`PoolBuf::len`].
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advance past the end of a PoolBuf");
        self.start += u32::try_from(n).expect("n <= len fits u32");
    }

    /// The pool's buffer size: the most bytes one receive puts in a buffer. A receive that
    /// filled its buffer (`len() == capacity()`) may have left more data in the socket. A
    /// datagram's buffer ([`crate::Datagram::buf`]) holds at most `capacity()` less
    /// [`crate::DATAGRAM_HEADROOM`] bytes of payload (the header and sender come first), so
    /// its `len()` never reaches `capacity()`: [`crate::Datagram::truncated`] says whether
    /// it was cut.
    pub fn capacity(&self) -> usize {
        self.pool.buffer_size as usize
    }

    /// The buffer's id in its pool (`None` for an end-of-stream handle).
    pub fn buffer_id(&self) -> Option<u16> {
        (self.bid != NO_BUFFER).then_some(self.bid)
    }

    fn ptr(&self) -> *mut u8 {
        assert_ne!(self.bid, NO_BUFFER);
        let offset = usize::from(self.bid) * self.pool.buffer_size as usize;
        // SAFETY: `bid < count`, so the buffer lies within the allocation.
        unsafe { self.pool.base.as_ptr().add(offset + self.start as usize) }
    }
}

impl Deref for PoolBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.bid == NO_BUFFER {
            return &[];
        }
        // SAFETY: this handle is the only holder of buffer `bid` (the kernel and the loop
        // touch a buffer only while it is in the pool), the view lies within it, and the
        // `Rc` keeps the memory alive for the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len()) }
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        if self.bid == NO_BUFFER {
            return &mut [];
        }
        // SAFETY: as for `deref`; `&mut self` makes this borrow the only one.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len()) }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if self.bid == NO_BUFFER {
            return;
        }
        let mut returned = self.pool.returned.borrow_mut();
        assert!(
            returned.len() < returned.capacity(),
            "buffer {} returned twice",
            self.bid
        );
        returned.push(self.bid);
    }
}

impl fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuf")
            .field("buffer_id", &self.buffer_id())
            .field("len", &self.len())
            .finish()
    }
}

/// The loop's side of the pool: the shared memory, and the buffers it holds itself, a stack
/// with the last returned on top (the readiness backends pick from it; io_uring lends from
/// it to the kernel's provided-buffer ring as much as the ring should hold). Reusing the
/// buffers just returned keeps the memory touched to what the load needs.
pub(crate) struct Pool {
    shared: Rc<PoolShared>,
    free: Vec<u16>,
}

impl Pool {
    /// `count` buffers of `buffer_size` bytes, all free. `count` below `u16::MAX`.
    pub(crate) fn new(count: u16, buffer_size: u32) -> Pool {
        assert!(count > 0 && count < NO_BUFFER);
        assert!(buffer_size > 0);
        let size = usize::from(count) * buffer_size as usize;
        // 16-byte alignment on purpose: the system allocator then zeroes a large pool with
        // calloc, whose fresh pages are the kernel's zero pages, untouched until a buffer is
        // used; a stricter alignment goes through posix_memalign and a memset that makes the
        // whole pool resident at once (16 MiB of RSS for an idle server).
        let layout = Layout::from_size_align(size, 16).expect("pool size fits a layout");
        // SAFETY: the size is non-zero. Zeroed, so that no byte is ever uninitialised.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(base).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Pool {
            shared: Rc::new(PoolShared {
                base,
                layout,
                buffer_size,
                count,
                returned: RefCell::new(Vec::with_capacity(usize::from(count))),
            }),
            free: {
                let mut free = Vec::with_capacity(usize::from(count));
                free.extend((0..count).rev());
                free
            },
        }
    }

    pub(crate) fn buffer_size(&self) -> u32 {
        self.shared.buffer_size
    }

    pub(crate) fn count(&self) -> u16 {
        self.shared.count
    }

    /// Where buffer `bid` starts, for the kernel or a recv syscall.
    pub(crate) fn buffer_ptr(&self, bid: u16) -> *mut u8 {
        assert!(bid < self.shared.count, "buffer {bid} is not in the pool");
        let offset = usize::from(bid) * self.shared.buffer_size as usize;
        // SAFETY: `bid < count`: within the allocation.
        unsafe { self.shared.base.as_ptr().add(offset) }
    }

    /// Whether a buffer is free in the loop's hands (readiness backends, and io_uring
    /// without a provided-buffer ring).
    pub(crate) fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Takes a free buffer (readiness backends), or `None` when all are lent.
    pub(crate) fn take_free(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// Puts a buffer the loop took but did not fill back among the free ones.
    pub(crate) fn put_free(&mut self, bid: u16) {
        assert!(bid < self.shared.count);
        assert!(
            self.free.len() < self.free.capacity(),
            "buffer {bid} freed twice"
        );
        self.free.push(bid);
    }

    /// Moves every buffer returned by a dropped handle among the free ones (readiness
    /// backends); how many there were.
    pub(crate) fn take_returned_into_free(&mut self) -> u32 {
        let mut returned = self.shared.returned.borrow_mut();
        let count = returned.len() as u32;
        for bid in returned.drain(..) {
            assert!(
                self.free.len() < self.free.capacity(),
                "buffer {bid} freed twice"
            );
            self.free.push(bid);
        }
        count
    }

    /// The pool's memory, for lending buffers (see [`PoolShared::lend`]).
    pub(crate) fn shared(&self) -> &Rc<PoolShared> {
        &self.shared
    }

    /// Leaks the memory: for a drop that could not get every operation back from the kernel.
    pub(crate) fn leak(self) {
        std::mem::forget(self.shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lending, writing through the handle, advancing, and returning on drop; an
    /// end-of-stream handle returns nothing; a handle outliving the pool is fine.
    #[test]
    fn handles_lend_and_return_buffers() {
        let mut pool = Pool::new(4, 16);
        let bid = pool.take_free().unwrap();
        // SAFETY: the buffer was just taken free, so nobody else reads or writes it, and it
        // holds 16 bytes.
        unsafe { pool.buffer_ptr(bid).copy_from(b"hello, pool".as_ptr(), 11) };
        let mut buf = pool.shared().lend(bid, 11);
        assert_eq!(&*buf, b"hello, pool");
        buf.advance(7);
        assert_eq!(&*buf, b"pool");
        buf[0] = b'P';
        assert_eq!(&*buf, b"Pool");
        let eof = pool.shared().end_of_stream();
        assert!(eof.is_empty());
        assert_eq!(eof.buffer_id(), None);
        drop(eof);
        drop(buf);
        assert_eq!(pool.take_returned_into_free(), 1);
        assert_eq!(pool.take_free(), Some(bid), "back among the free ones");
        let kept = pool.shared().lend(pool.free[0], 0);
        drop(pool);
        assert!(kept.is_empty());
        drop(kept);
    }
}
