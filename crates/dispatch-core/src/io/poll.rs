//! `Io::poll` and `Io::poll_multishot`: waiting for readiness of any descriptor, the loop's
//! own or one another library owns, and how that composes with the loop's operations on the
//! same descriptor.

use std::os::fd::RawFd;

use super::{Callback, Io, PollCallback, PollShotCallback};
use crate::operation::{Args, OpId, ScheduleError, Tag};
use crate::poll::{native_interest, PollEvents};

impl<C> Io<C> {
    /// Waits until `fd` is ready for one of `interest`'s events ([`PollEvents::READABLE`],
    /// [`PollEvents::WRITABLE`]), or reports a hang-up or an error, which are always
    /// reported; the callback gets the events that fired (those of `interest`, plus
    /// [`PollEvents::HANGUP`] and [`PollEvents::ERROR`] when they hold). `fd` may be any
    /// descriptor `poll(2)` accepts, whoever owns it: a pipe, a socket another library
    /// drives, an eventfd, timerfd, signalfd or inotify descriptor. A descriptor that is not
    /// open is `EBADF`; a regular file is always ready. Cancel ([`Io::cancel`]) and
    /// deadlines ([`Io::set_deadline`]) work as for any operation (`ECANCELED`,
    /// `ETIMEDOUT`).
    ///
    /// A poll only looks: it reads, accepts or writes nothing, so it never takes anything
    /// from the loop's own operations on the same descriptor, nor they from it.
    /// - It reports the descriptor's state when it is checked, in scheduling order with the
    ///   loop's other operations: a poll scheduled before a receive sees the bytes that the
    ///   receive then takes; a poll scheduled after a receive that drains the socket waits
    ///   for the next arrival. The same on every backend (io_uring performs a batch's SQEs in
    ///   order; the readiness engine tries operations in order; so does the simulator).
    /// - A poll that waits is checked again when the descriptor's state changes. On epoll
    ///   and kqueue it is checked (with a non-blocking `poll(2)`, which consumes nothing)
    ///   before the operations queued on the same descriptor run, and before a new one on it
    ///   is tried, so a poll and a receive waiting together both complete when bytes arrive,
    ///   as do a waiting poll and a receive scheduled after the bytes came. On the simulator
    ///   a waiting poll is tried in order with the waiting operations. On io_uring the
    ///   kernel wakes both and performs them in an order of its own: a poll whose check
    ///   comes after a receive that took every byte finds nothing and goes on waiting. So do
    ///   not race a poll against a receive for the same bytes; a receive's completion
    ///   already says bytes came.
    /// - On epoll and kqueue a waiting poll counts as an operation on the descriptor: the
    ///   descriptor is registered once, edge-triggered, as for a receive or a send (kqueue:
    ///   `EVFILT_READ` for readability and hang-up, `EVFILT_WRITE` for writability), and the
    ///   engine's remembered readiness, which its own operations use, is neither read nor
    ///   changed by a poll: a poll's answer is always `poll(2)`'s, never a readiness the
    ///   engine remembers from an earlier edge.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use dispatch_loop::{Io, Options, PollEvents, Tag};
    ///
    /// // A pipe stands for a descriptor some other library owns; the loop only borrows it.
    /// let (reader, mut writer) = std::io::pipe().unwrap();
    /// let mut io: Io<Option<PollEvents>> = Io::new(&Options::new(8)).expect("a backend");
    /// fn on_ready(got: &mut Option<PollEvents>, _: &mut Io<Option<PollEvents>>, _: Tag,
    ///             events: std::io::Result<PollEvents>) {
    ///     *got = Some(events.expect("poll"));
    /// }
    /// io.poll(0, reader.as_raw_fd(), PollEvents::READABLE, on_ready).expect("a free slot");
    /// let mut got = None;
    /// io.tick(&mut got).unwrap();
    /// assert_eq!(got, None); // nothing to read yet
    /// writer.write_all(b"x").unwrap();
    /// io.run_until_idle(&mut got).unwrap();
    /// assert!(got.unwrap().is_readable());
    /// ```
    ///
    /// # Portability
    /// - io_uring: one `POLL_ADD`, which the kernel answers; epoll and kqueue: a
    ///   non-blocking `poll(2)`, then the loop's one edge-triggered registration of the
    ///   descriptor; the simulator: the state of its own sockets, listeners, datagram
    ///   sockets (readable with a datagram arrived, always writable) and files (a
    ///   descriptor of the real world is `EBADF` there).
    /// - [`PollEvents::HANGUP`] includes `POLLRDHUP` on Linux only: elsewhere a TCP peer that
    ///   only shut its writing side (a FIN) makes the socket readable (a read returns 0), and
    ///   a hang-up is reported once both directions are closed.
    /// - macOS's `poll(2)` does not handle some devices (terminals among them): there, on
    ///   kqueue, a poll of one answers `EBADF`.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn poll(
        &mut self,
        tag: Tag,
        fd: RawFd,
        interest: PollEvents,
        callback: PollCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let events = native_interest(interest);
        let args = move || Args::Poll {
            fd,
            events,
            multishot: false,
        };
        self.schedule(tag, args, Callback::Poll(callback), ())
    }

    /// [`Io::poll`], until cancelled (or an error ends it): a callback with
    /// [`crate::Shot::more`] `true` each time `fd` is ready, then a final callback
    /// (`more == false`: `ECANCELED` after [`Io::cancel`], `ETIMEDOUT` after a deadline, or
    /// an error such as `EBADF`). A hang-up does not end it: cancel the poll once the
    /// hang-up is seen (with the loop's re-arm, below, a descriptor that stays hung up is
    /// reported again in every turn).
    ///
    /// How often the callback runs differs by backend when the callback leaves the
    /// descriptor ready:
    /// - io_uring with the kernel's multishot poll (`IORING_POLL_ADD_MULTI`; used where the
    ///   kernel has multishot receive, 6.0, and `UringOptions::multishot` is on) is
    ///   edge-triggered: a callback when the descriptor is (or becomes) ready, then one per
    ///   new event (each write into a pipe, each arrival on a socket), however many of them
    ///   came before the program read anything.
    /// - Everywhere else (epoll, kqueue, the simulator, io_uring without the kernel's
    ///   multishot) the loop re-arms a single poll after each callback, for the next turn,
    ///   which is level-triggered: a callback in each turn in which the descriptor is still
    ///   (or again) ready. A multishot poll for writability of a socket with room thus runs
    ///   its callback every turn there, and the loop never sleeps: wait for writability with
    ///   a one-shot [`Io::poll`], when a write would block.
    ///
    /// A program that consumes the readiness in its callback (reads the eventfd, the
    /// timerfd, the pipe until `EAGAIN`) sees the same on every backend, one callback per
    /// arrival, except that arrivals coming together may give io_uring's kernel multishot
    /// several callbacks where the loop's re-arm gives one: the later ones then find nothing
    /// to read, so read without blocking. As for the loop's other multishots, a cancel from a
    /// callback still lets the results already reaped reach their callbacks, in order, the
    /// last one final.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// use dispatch_loop::{Io, OpId, Options, PollEvents, Shot, Tag};
    ///
    /// struct Ctx { socket: UnixStream, peer: UnixStream, id: Option<OpId>, shots: u32 }
    ///
    /// fn on_ready(ctx: &mut Ctx, io: &mut Io<Ctx>, _: Tag, shot: Shot<PollEvents>) {
    ///     if !shot.more {
    ///         return; // the final callback: ECANCELED, after the cancel below
    ///     }
    ///     let mut buf = [0; 64];
    ///     while ctx.socket.read(&mut buf).is_ok() {} // take what woke us, without blocking
    ///     ctx.shots += 1;
    ///     if ctx.shots < 3 {
    ///         ctx.peer.write_all(b"again").unwrap();
    ///     } else {
    ///         io.cancel(0, ctx.id.unwrap(), |_, _, _, answer| answer.unwrap()).unwrap();
    ///     }
    /// }
    ///
    /// let (socket, mut peer) = UnixStream::pair().unwrap();
    /// socket.set_nonblocking(true).unwrap();
    /// peer.write_all(b"hello").unwrap();
    /// let fd = socket.as_raw_fd();
    /// let mut ctx = Ctx { socket, peer, id: None, shots: 0 };
    /// let mut io: Io<Ctx> = Io::new(&Options::new(8)).expect("a backend");
    /// let id = io.poll_multishot(0, fd, PollEvents::READABLE, on_ready).expect("a free slot");
    /// ctx.id = Some(id);
    /// io.run_until_idle(&mut ctx).unwrap(); // until the multishot's final callback
    /// assert_eq!(ctx.shots, 3);
    /// ```
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn poll_multishot(
        &mut self,
        tag: Tag,
        fd: RawFd,
        interest: PollEvents,
        callback: PollShotCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let events = native_interest(interest);
        let args = move || Args::Poll {
            fd,
            events,
            multishot: true,
        };
        self.schedule_special(tag, args, Callback::PollShot(callback))
    }
}
