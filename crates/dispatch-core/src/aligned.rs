//! Owned buffers whose alignment is chosen when they are made, for direct I/O (`O_DIRECT`):
//! the kernel then moves bytes between the device and the buffer without the page cache, and
//! asks that the buffer's address, the file offset and the length be multiples of the
//! device's block size (512 bytes or 4 KiB; `Io::statx` reports it).
//!
//! Why a type of its own rather than a `Vec<u8>`: a `Vec<u8>`'s alignment is 1, and asking
//! the allocator for more needs unsafe code in the application. `AlignedBuf` is that code,
//! once: a fixed capacity (it never reallocates, which would lose the alignment), a length
//! that only grows through safe calls (`resize`, `extend_from_slice`, a read's completion).
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// A heap buffer with a fixed capacity and the alignment asked for at [`AlignedBuf::new`],
/// for reads and writes with `O_DIRECT` ([`crate::Io::read`], [`crate::Io::write`] and the
/// vectored forms take it as they take a `Vec<u8>`). Its bytes are `buf[..len()]`; a read
/// fills the spare capacity `buf[len()..capacity()]`, so [`AlignedBuf::clear`] it first to
/// read into the whole buffer again.
///
/// ```
/// use dispatch_loop::AlignedBuf;
///
/// let mut buf = AlignedBuf::new(8192, 4096).expect("a valid layout");
/// assert_eq!(buf.as_ptr() as usize % 4096, 0);
/// buf.extend_from_slice(b"record");
/// buf.resize(4096, 0); // direct I/O moves whole blocks
/// assert_eq!(&buf[..6], b"record");
/// assert_eq!((buf.len(), buf.capacity()), (4096, 8192));
/// ```
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
    /// The registered set the memory belongs to, and its index there (`Io::registered_buf`);
    /// `None` for memory of its own.
    home: Option<(Arc<RegisteredSet>, u16)>,
}

// SAFETY: the buffer owns its allocation exclusively (no aliasing pointer survives outside
// an operation in flight, during which the loop, not the program, holds the buffer), like a
// `Vec<u8>`: moving it to another thread moves that ownership.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` only reads the bytes, as `&Vec<u8>` does.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer of `capacity` bytes whose address is a multiple of `align`.
    ///
    /// # Errors
    /// `InvalidInput` when `align` is not a power of two, `capacity` is 0, or `capacity`
    /// rounded up to `align` overflows `isize`.
    pub fn new(capacity: usize, align: usize) -> io::Result<AlignedBuf> {
        if capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an aligned buffer needs a capacity of at least 1 byte",
            ));
        }
        let layout = Layout::from_size_align(capacity, align).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "no aligned buffer of {capacity} bytes at alignment {align} \
                     (the alignment must be a power of two)"
                ),
            )
        })?;
        // SAFETY: the layout's size is not zero (checked above).
        let ptr = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Ok(AlignedBuf {
            ptr,
            len: 0,
            layout,
            home: None,
        })
    }

    /// A buffer of `len` zero bytes (capacity `len`) whose address is a multiple of `align`.
    ///
    /// # Errors
    /// As for [`AlignedBuf::new`].
    pub fn zeroed(len: usize, align: usize) -> io::Result<AlignedBuf> {
        let mut buf = AlignedBuf::new(len, align)?;
        buf.resize(len, 0);
        Ok(buf)
    }

    /// The number of bytes in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes the buffer can hold; fixed when it was made.
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// The alignment the buffer was made with (its address is a multiple of it).
    pub fn align(&self) -> usize {
        self.layout.align()
    }

    /// Whether the buffer is one of its loop's registered buffers (`Io::registered_buf`),
    /// which goes back to its set when dropped.
    pub fn is_registered(&self) -> bool {
        self.home.is_some()
    }

    /// The buffer's index in `set`, if it is one of that set's.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn index_in(&self, set: &Arc<RegisteredSet>) -> Option<u16> {
        match &self.home {
            Some((home, index)) if Arc::ptr_eq(home, set) => Some(*index),
            _ => None,
        }
    }

    /// Empties the buffer (its capacity stays).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens the buffer to `len` bytes; does nothing if it holds no more.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes the buffer `len` bytes long, filling new bytes with `value`.
    ///
    /// # Panics
    /// When `len` is more than the capacity: the buffer never grows.
    pub fn resize(&mut self, len: usize, value: u8) {
        assert!(
            len <= self.capacity(),
            "AlignedBuf::resize to {len} bytes past its capacity of {}",
            self.capacity()
        );
        if len > self.len {
            // SAFETY: `len..new` lies within the allocation (asserted above).
            unsafe {
                self.ptr
                    .as_ptr()
                    .add(self.len)
                    .write_bytes(value, len - self.len)
            };
        }
        self.len = len;
    }

    /// Appends `bytes`.
    ///
    /// # Panics
    /// When they do not fit in the spare capacity: the buffer never grows.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        assert!(
            bytes.len() <= self.capacity() - self.len,
            "AlignedBuf::extend_from_slice of {} bytes with {} spare",
            bytes.len(),
            self.capacity() - self.len
        );
        // SAFETY: the destination lies within the allocation (asserted above), and a `&[u8]`
        // cannot overlap it: the buffer is borrowed mutably here.
        unsafe {
            let dst = self.ptr.as_ptr().add(self.len);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
        }
        self.len += bytes.len();
    }

    /// The spare capacity, `capacity() - len()` bytes that may hold anything.
    pub fn spare_capacity_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: the allocation holds `capacity` bytes; the spare part is handed out as
        // possibly uninitialized bytes, borrowed mutably from the buffer.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.len).cast::<MaybeUninit<u8>>(),
                self.capacity() - self.len,
            )
        }
    }

    /// Marks `n` more bytes of the spare capacity as the buffer's, after the kernel wrote
    /// them (a read's completion).
    ///
    /// # Safety
    /// The `n` bytes after `len()` must have been written, and fit in the capacity.
    pub(crate) unsafe fn grow(&mut self, n: usize) {
        assert!(n <= self.capacity() - self.len, "grown past the capacity");
        self.len += n;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Some((set, index)) = self.home.take() {
            set.put_back(index);
            return;
        }
        // SAFETY: allocated in `new` with this layout; the loop hands a buffer back (and so
        // lets it drop) only once the kernel can no longer touch it.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A set of equal buffers in one page-aligned allocation, made at `Io::new`
/// (`Options::registered`) and on io_uring registered with the kernel once
/// (`IORING_REGISTER_BUFFERS`), so that reads and writes from them skip pinning their pages
/// on every operation (`READ_FIXED`, `WRITE_FIXED`). Lent out as [`AlignedBuf`]s that come
/// back when dropped, from any thread (hence a mutex, taken once per lend and return).
pub(crate) struct RegisteredSet {
    base: NonNull<u8>,
    layout: Layout,
    buffer_size: usize,
    free: Mutex<Vec<u16>>,
}

// SAFETY: the memory is only reached through the `AlignedBuf`s lent out, each owning its
// part exclusively, and the free list is behind a mutex.
unsafe impl Send for RegisteredSet {}
// SAFETY: as above; `&RegisteredSet` reads only immutable fields or locks the list.
unsafe impl Sync for RegisteredSet {}

/// The alignment of registered buffers: a page, which suits direct I/O on every device.
pub(crate) const REGISTERED_ALIGN: usize = 4096;

impl RegisteredSet {
    /// `count` buffers of `buffer_size` bytes (a multiple of [`REGISTERED_ALIGN`]).
    pub(crate) fn new(count: u16, buffer_size: usize) -> Arc<RegisteredSet> {
        assert!(count > 0 && buffer_size > 0 && buffer_size.is_multiple_of(REGISTERED_ALIGN));
        let size = buffer_size * usize::from(count);
        let layout = Layout::from_size_align(size, REGISTERED_ALIGN).expect("validated size");
        // SAFETY: the size is not zero (asserted above).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(base) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Arc::new(RegisteredSet {
            base,
            layout,
            buffer_size,
            // Lent lowest index first: a small load touches few pages.
            free: Mutex::new((0..count).rev().collect()),
        })
    }

    /// The buffers as the kernel registers them: one iovec each, in index order.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        let count = self.layout.size() / self.buffer_size;
        (0..count)
            .map(|i| libc::iovec {
                // SAFETY: `i * buffer_size` lies within the allocation.
                iov_base: unsafe { self.base.as_ptr().add(i * self.buffer_size) }.cast(),
                iov_len: self.buffer_size,
            })
            .collect()
    }

    /// Lends a free buffer, empty, or `None` when all are lent.
    pub(crate) fn lend(self: &Arc<Self>) -> Option<AlignedBuf> {
        let index = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        let offset = usize::from(index) * self.buffer_size;
        // SAFETY: the offset lies within the allocation; buffer `index` was free, so nothing
        // else refers to its bytes until this handle comes back.
        let ptr = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(offset)) };
        let layout = Layout::from_size_align(self.buffer_size, REGISTERED_ALIGN)
            .expect("a part of a valid layout");
        Some(AlignedBuf {
            ptr,
            len: 0,
            layout,
            home: Some((Arc::clone(self), index)),
        })
    }

    fn put_back(&self, index: u16) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        // Each index has one handle at a time: the list never outgrows the set (and so
        // never reallocates: it was made holding every index).
        let count = self.layout.size() / self.buffer_size;
        assert!(
            free.len() < count,
            "registered buffer {index} returned twice"
        );
        free.push(index);
    }
}

impl Drop for RegisteredSet {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the last `Arc` is gone, so no buffer
        // is lent, and the loop (whose ring registered the memory) held one until dropped.
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialized (by `resize`, `extend_from_slice` or
        // a read's completion) and lie within the allocation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, borrowed mutably from the buffer.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("align", &self.align())
            .finish_non_exhaustive()
    }
}
