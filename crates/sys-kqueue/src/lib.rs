//! `sys-kqueue`: kqueue's changelist-and-wait interface, narrowed to what an I/O loop needs
//! (read, write and user filters), behind one seam, the [`Kevent`] trait.
//!
//! - [`Change`] and [`Event`] are portable records of `struct kevent`;
//! - [`Changelist`] is a fixed-capacity list of changes that goes to the kernel with the next
//!   wait, in the same `kevent` call;
//! - `System` (FreeBSD and macOS only) is the real syscall over rustix;
//! - [`Fake`] (feature `fake`, any Unix) is an in-memory double with kqueue's semantics
//!   (one-shot, `EV_CLEAR` edges on Linux, `udata`, `EV_EOF`, `EV_ERROR` entries for failed
//!   changes, user events triggered from other threads) over `poll(2)` and, for `EV_CLEAR`,
//!   edge-triggered epoll, so that the kqueue backend's own logic runs on Linux against real
//!   sockets; it counts its calls ([`Fake::calls`]) as the real syscall would cost them.
//!
//! ```
//! # #[cfg(feature = "fake")] {
//! use sys_kqueue::{Change, Changelist, Fake, Filter, Flags, Kevent, Event};
//!
//! let (reader, mut writer) = std::os::unix::net::UnixStream::pair().unwrap();
//! let mut kq = Fake::new(16).unwrap();
//! let mut changes = Changelist::with_capacity(4);
//! use std::os::fd::AsRawFd;
//! let fd = reader.as_raw_fd() as usize;
//! changes.push(Change::new(fd, Filter::Read, Flags::ADD | Flags::ONESHOT, 7)).unwrap();
//! std::io::Write::write_all(&mut writer, b"x").unwrap();
//! let mut events = [Event::EMPTY; 4];
//! let n = kq.kevent(changes.as_slice(), &mut events, None).unwrap();
//! changes.clear();
//! assert_eq!(n, 1);
//! assert_eq!((events[0].ident, events[0].udata), (fd, 7));
//! # }
//! ```

mod changelist;
#[cfg(any(test, feature = "fake"))]
mod fake;
mod filter;
mod kevent;

pub use changelist::{Changelist, ChangelistFull};
#[cfg(any(test, feature = "fake"))]
pub use fake::Fake;
pub use filter::{Change, Event, Filter, Flags};
#[cfg(kqueue)]
pub use kevent::System;
pub use kevent::{Kevent, Notifier};
