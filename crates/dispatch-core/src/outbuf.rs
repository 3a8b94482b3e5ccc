//! Owned bytes to send: [`OutBuf`], one type for what a program has to send (its own
//! `Vec<u8>`, a `&'static` constant, a pool buffer received earlier), so that a vectored send
//! ([`crate::Io::send_vectored`]) can gather a header, a body and an echo into one syscall.

use std::fmt;
use std::ops::Deref;

use crate::pool::PoolBuf;

/// The most buffers one vectored operation hands the kernel: a vectored send, and a vectored
/// file read or write (`IOV_MAX` is 1,024 on Linux and the BSDs; an operation given more
/// uses the first `GATHER_MAX` and reports that count).
pub const GATHER_MAX: usize = 64;

/// Bytes to send, owned (so they stay put while the kernel reads them): made from a
/// `Vec<u8>` or `String`, from `&'static` bytes or a `&'static str` (no copy, no allocation),
/// or from a [`PoolBuf`] (an echo without a copy). It reads as `[u8]` through `Deref`, and
/// [`OutBuf::advance`] narrows it past bytes already sent.
///
/// ```
/// use dispatch_loop::OutBuf;
///
/// let mut reply = vec![OutBuf::from("HTTP/1.1 200 OK\r\n"), OutBuf::from(b"\r\n".to_vec())];
/// assert_eq!(&reply[0][..4], b"HTTP");
/// OutBuf::consume(&mut reply, 18); // a send that sent 18 bytes
/// assert_eq!(reply.len(), 1);
/// assert_eq!(&reply[0][..], b"\n");
/// ```
pub struct OutBuf {
    bytes: Bytes,
}

enum Bytes {
    Vec { vec: Vec<u8>, start: usize },
    Static(&'static [u8]),
    Pool(PoolBuf),
}

impl OutBuf {
    /// Bytes in view.
    pub fn len(&self) -> usize {
        self.deref().len()
    }

    /// Whether no byte is in view.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the first `n` bytes from the view (the part a short send sent).
    ///
    /// # Panics
    /// When `n` exceeds [`OutBuf::len`].
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advance past the end of an OutBuf");
        match &mut self.bytes {
            Bytes::Vec { start, .. } => *start += n,
            Bytes::Static(bytes) => *bytes = &bytes[n..],
            Bytes::Pool(buf) => buf.advance(n),
        }
    }

    /// Drops the first `n` bytes of the list `bufs` (what a vectored send sent): buffers sent
    /// whole leave the list (a pool buffer goes back to its pool), a buffer sent in part is
    /// advanced past the part.
    ///
    /// # Panics
    /// When `n` exceeds the bytes in the list.
    pub fn consume(bufs: &mut Vec<OutBuf>, mut n: usize) {
        let mut whole = 0;
        for buf in bufs.iter_mut() {
            if n < buf.len() || (n == 0 && !buf.is_empty()) {
                buf.advance(n);
                n = 0;
                break;
            }
            n -= buf.len();
            whole += 1;
        }
        assert_eq!(n, 0, "consume past the end of the buffers");
        bufs.drain(..whole);
    }

    /// The owned `Vec<u8>` this was made from, with the bytes advanced over removed, or
    /// `None` for static bytes and pool buffers.
    pub fn into_vec(self) -> Option<Vec<u8>> {
        match self.bytes {
            Bytes::Vec { mut vec, start } => {
                vec.drain(..start);
                Some(vec)
            }
            Bytes::Static(_) | Bytes::Pool(_) => None,
        }
    }
}

impl Deref for OutBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Vec { vec, start } => &vec[*start..],
            Bytes::Static(bytes) => bytes,
            Bytes::Pool(buf) => buf,
        }
    }
}

impl From<Vec<u8>> for OutBuf {
    fn from(vec: Vec<u8>) -> OutBuf {
        OutBuf {
            bytes: Bytes::Vec { vec, start: 0 },
        }
    }
}

impl From<String> for OutBuf {
    fn from(string: String) -> OutBuf {
        OutBuf::from(string.into_bytes())
    }
}

impl From<&'static [u8]> for OutBuf {
    fn from(bytes: &'static [u8]) -> OutBuf {
        OutBuf {
            bytes: Bytes::Static(bytes),
        }
    }
}

impl<const N: usize> From<&'static [u8; N]> for OutBuf {
    fn from(bytes: &'static [u8; N]) -> OutBuf {
        OutBuf::from(&bytes[..])
    }
}

impl From<&'static str> for OutBuf {
    fn from(text: &'static str) -> OutBuf {
        OutBuf::from(text.as_bytes())
    }
}

impl From<PoolBuf> for OutBuf {
    fn from(buf: PoolBuf) -> OutBuf {
        OutBuf {
            bytes: Bytes::Pool(buf),
        }
    }
}

impl fmt::Debug for OutBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.bytes {
            Bytes::Vec { .. } => "vec",
            Bytes::Static(_) => "static",
            Bytes::Pool(_) => "pool",
        };
        f.debug_struct("OutBuf")
            .field("kind", &kind)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Vec<OutBuf> {
        vec![
            OutBuf::from("ab"),
            OutBuf::from(Vec::new()),
            OutBuf::from(b"cde".to_vec()),
        ]
    }

    #[test]
    fn consume_drops_whole_buffers_and_advances_a_partial_one() {
        let mut bufs = list();
        OutBuf::consume(&mut bufs, 3);
        assert_eq!(bufs.len(), 1);
        assert_eq!(&bufs[0][..], b"de");
        OutBuf::consume(&mut bufs, 2);
        assert!(bufs.is_empty());
    }

    #[test]
    fn consume_of_nothing_keeps_everything_but_leading_empty_buffers() {
        let mut bufs = list();
        OutBuf::consume(&mut bufs, 0);
        assert_eq!(bufs.len(), 3);
        let mut empty = vec![OutBuf::from(""), OutBuf::from("x")];
        OutBuf::consume(&mut empty, 0);
        assert_eq!(empty.len(), 1, "an empty buffer is sent whole by any send");
    }

    #[test]
    #[should_panic(expected = "consume past the end")]
    fn consume_past_the_end_panics() {
        OutBuf::consume(&mut list(), 6);
    }

    #[test]
    fn into_vec_keeps_what_was_not_advanced_over() {
        let mut buf = OutBuf::from(b"hello".to_vec());
        buf.advance(2);
        assert_eq!(buf.into_vec().as_deref(), Some(&b"llo"[..]));
        assert!(OutBuf::from("static").into_vec().is_none());
    }
}
