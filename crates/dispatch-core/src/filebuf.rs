//! The buffers a file read or write holds while in flight, whatever kind the program gave
//! (`Vec<u8>` or `AlignedBuf`), in one shape the backends read from and write into: a
//! pointer to the bytes, a pointer to the spare capacity, and a way to grow the length once
//! the kernel wrote. The kind comes back out unchanged with the result.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use crate::aligned::AlignedBuf;

/// One buffer of a file operation.
#[derive(Debug)]
pub enum Bytes {
    /// A `Vec<u8>`: alignment 1.
    Vec(Vec<u8>),
    /// An [`AlignedBuf`].
    Aligned(AlignedBuf),
}

impl Bytes {
    /// The bytes (what a write sends).
    pub(crate) fn filled(&self) -> &[u8] {
        match self {
            Bytes::Vec(buf) => buf,
            Bytes::Aligned(buf) => buf,
        }
    }

    /// The spare capacity (where a read lands).
    pub(crate) fn spare(&mut self) -> &mut [MaybeUninit<u8>] {
        match self {
            Bytes::Vec(buf) => buf.spare_capacity_mut(),
            Bytes::Aligned(buf) => buf.spare_capacity_mut(),
        }
    }

    /// The spare capacity as the kernel takes it: start and length.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn spare_raw(&mut self) -> (*mut u8, usize) {
        let spare = self.spare();
        (spare.as_mut_ptr().cast(), spare.len())
    }

    /// The bytes as the kernel takes them: start and length.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn filled_raw(&self) -> (*const u8, usize) {
        let filled = self.filled();
        (filled.as_ptr(), filled.len())
    }

    /// Takes `n` bytes of the spare capacity into the buffer, after a read wrote them.
    ///
    /// # Safety
    /// The kernel (or a syscall) must have written the first `n` bytes of the spare
    /// capacity, and no one writes there any more.
    pub(crate) unsafe fn grow(&mut self, n: usize) {
        match self {
            Bytes::Vec(buf) => {
                let len = buf.len();
                assert!(n <= buf.capacity() - len, "read past the spare capacity");
                // SAFETY: the caller's contract: `buf[len..len + n]` is written and within
                // the capacity (asserted).
                unsafe { buf.set_len(len + n) };
            }
            // SAFETY: the caller's contract, passed on.
            Bytes::Aligned(buf) => unsafe { buf.grow(n) },
        }
    }
}

/// The buffers of a vectored file operation, of one kind.
#[derive(Debug)]
pub enum BytesList {
    /// `Vec<u8>`s.
    Vec(Vec<Vec<u8>>),
    /// [`AlignedBuf`]s.
    Aligned(Vec<AlignedBuf>),
}

impl BytesList {
    /// How many buffers.
    pub(crate) fn len(&self) -> usize {
        match self {
            BytesList::Vec(bufs) => bufs.len(),
            BytesList::Aligned(bufs) => bufs.len(),
        }
    }

    /// Buffer `i`'s bytes (a write's), as the kernel takes them.
    pub(crate) fn filled_raw(&self, i: usize) -> (*const u8, usize) {
        let filled: &[u8] = match self {
            BytesList::Vec(bufs) => &bufs[i],
            BytesList::Aligned(bufs) => &bufs[i],
        };
        (filled.as_ptr(), filled.len())
    }

    /// Buffer `i`'s spare capacity (a read's), as the kernel takes it.
    pub(crate) fn spare_raw(&mut self, i: usize) -> (*mut u8, usize) {
        let spare = match self {
            BytesList::Vec(bufs) => bufs[i].spare_capacity_mut(),
            BytesList::Aligned(bufs) => bufs[i].spare_capacity_mut(),
        };
        (spare.as_mut_ptr().cast(), spare.len())
    }

    /// Spreads `n` bytes a vectored read wrote over the buffers' spare capacities, in order.
    ///
    /// # Safety
    /// The read must have written `n` bytes into the spare capacities of the first buffers,
    /// in order (as `preadv` does), and no one writes there any more.
    pub(crate) unsafe fn grow(&mut self, mut n: usize) {
        let count = self.len();
        for i in 0..count {
            let (_, spare) = self.spare_raw(i);
            let take = spare.min(n);
            match self {
                BytesList::Vec(bufs) => {
                    let len = bufs[i].len();
                    // SAFETY: the caller's contract: the first `take` bytes of this
                    // buffer's spare capacity were written (the read fills in order), and
                    // `take` is at most the spare capacity.
                    unsafe { bufs[i].set_len(len + take) };
                }
                // SAFETY: as above.
                BytesList::Aligned(bufs) => unsafe { bufs[i].grow(take) },
            }
            n -= take;
        }
        assert_eq!(
            n, 0,
            "a vectored read of more than its buffers' spare capacity"
        );
    }
}
