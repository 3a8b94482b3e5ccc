//! The public operations of `Io`: each one takes a slot, stores its arguments and callback,
//! and hands it to the backend (or parks it in the overflow queue).

use std::net::{Shutdown, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};

use super::{
    AcceptCallback, BufCallback, Callback, CountCallback, FdCallback, Io, PoolSendCallback,
    PooledCallback, UnitCallback, VectoredCallback,
};
use crate::operation::{Args, OpId, ScheduleError, Tag};
use crate::outbuf::OutBuf;
use crate::pool::PoolBuf;
use crate::slots::{Budget, State};

impl<C> Io<C> {
    /// Accepts a connection on the listening socket `listener`. The new socket is
    /// non-blocking and close-on-exec on every backend, and owned by the callback's
    /// `OwnedFd`.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn accept(
        &mut self,
        tag: Tag,
        listener: RawFd,
        callback: FdCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.schedule(
            tag,
            move || Args::Accept {
                fd: listener,
                multishot: false,
            },
            Callback::Fd(callback),
            (),
        )
    }

    /// Accepts connections on `listener` until cancelled (or until an error ends it): one
    /// submission, one callback per connection with [`crate::Shot::more`] `true`, then a
    /// final callback (`more == false`: an error, `ECANCELED` after [`Io::cancel`], or the
    /// real result of a connection accepted as the cancel arrived). Each socket is
    /// non-blocking and close-on-exec, owned by the callback's `OwnedFd`.
    ///
    /// io_uring uses the kernel's multishot accept where it has it (6.0 and later here, and
    /// not masked by `UringOptions::multishot`); elsewhere the loop re-arms a single-shot
    /// accept after each connection, for the next turn. The callbacks are the same either
    /// way, except how many connections one turn takes (the kernel's takes every one
    /// waiting; see [`Io::cancel`] for a cancel from a callback). An error such as `EMFILE`
    /// ends the operation (a server pauses, then accepts again).
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn accept_multishot(
        &mut self,
        tag: Tag,
        listener: RawFd,
        callback: AcceptCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let args = move || Args::Accept {
            fd: listener,
            multishot: true,
        };
        self.schedule_special(tag, args, Callback::Accepted(callback))
    }

    /// Receives once into a buffer of the loop's pool (`Options::pool`), picked only when
    /// data arrives: a pending pooled receive pins no buffer. The callback gets the bytes as
    /// a [`PoolBuf`] (empty at end of stream), which goes back to the pool when dropped.
    /// When the pool is empty, a receive with something to read waits for a buffer to come
    /// back (counted once per wait in `Stats::pool_waits`); it does not fail. An idle one
    /// waits for data holding none, as it does when the pool has buffers. The end of stream
    /// (and on io_uring an error) comes only once a buffer is back, as data would: a program
    /// that holds every buffer holds up its pooled receives. (On epoll and kqueue an error
    /// comes at once, and on the simulator the end of stream too.)
    ///
    /// On io_uring the buffers are lent to the kernel through a provided-buffer ring (5.19).
    /// Where that is missing or masked (`UringOptions::pbuf_ring`), the receive works as on
    /// the readiness backends, each step one submission: a non-blocking receive into a
    /// buffer picked then (a poll for readability instead when none is free); if nothing
    /// was there, a poll for readability holding no buffer, then the receive again. Either
    /// way a pending receive holds no buffer. Measured with 1,000 pending pooled receives
    /// on a 64-buffer pool: no memory beyond the pool on io_uring (with and without the
    /// ring) and epoll, and no pool wait on any backend.
    ///
    /// # Errors
    /// When every slot is in flight, or the loop has no pool (`ScheduleErrorKind::NoPool`).
    pub fn recv_pooled(
        &mut self,
        tag: Tag,
        fd: RawFd,
        callback: PooledCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.schedule_pooled(tag, fd, false, callback)
    }

    /// Receives into pool buffers until end of stream, an error or a cancel: one submission,
    /// one callback per arrival with [`crate::Shot::more`] `true`, then exactly one final
    /// callback (`more == false`) carrying the end of stream (an empty buffer), the error,
    /// `ECANCELED` (`ETIMEDOUT` for a deadline, [`Io::set_deadline`]), or, when a cancel or
    /// deadline met an arrival on its way, that arrival's bytes: the receive is over either
    /// way. Bytes arrive in stream order. As for [`Io::recv_pooled`], buffers are
    /// picked when data arrives and an empty pool makes the receive wait, not fail.
    ///
    /// io_uring uses the kernel's multishot receive where it has it (6.0, not masked by
    /// `UringOptions::multishot`); elsewhere the loop re-arms a single-shot receive after
    /// each arrival, for the next turn. The callbacks are the same either way, except how
    /// many arrivals one turn takes (the kernel's takes all that has arrived while the pool
    /// lasts, the loop's one buffer; see [`Io::cancel`] for a cancel from a callback). An
    /// idle timeout is a deadline ([`Io::set_deadline`]) moved on every callback.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// use dispatch_loop::{Io, Options, PoolBuf, PoolOptions, Shot, Tag};
    ///
    /// fn on_data(got: &mut Vec<u8>, _: &mut Io<Vec<u8>>, _: Tag, shot: Shot<PoolBuf>) {
    ///     let buf = shot.result.expect("recv");
    ///     got.extend_from_slice(&buf); // the buffer goes back to the pool when dropped
    ///     assert_eq!(shot.more, !buf.is_empty()); // the last callback is the end of stream
    /// }
    ///
    /// let mut options = Options::new(8);
    /// options.pool = PoolOptions::new(4, 4096);
    /// let mut io: Io<Vec<u8>> = Io::new(&options).expect("a backend");
    /// let (socket, mut peer) = UnixStream::pair().unwrap();
    /// io.recv_multishot(0, socket.as_raw_fd(), on_data).expect("a free slot");
    /// peer.write_all(b"one, ").unwrap();
    /// let mut got = Vec::new();
    /// io.run_for_ns(&mut got, 10_000_000).unwrap();
    /// peer.write_all(b"two").unwrap();
    /// drop(peer);
    /// io.run_until_idle(&mut got).unwrap();
    /// assert_eq!(got, b"one, two");
    /// ```
    ///
    /// # Errors
    /// When every slot is in flight, or the loop has no pool (`ScheduleErrorKind::NoPool`).
    pub fn recv_multishot(
        &mut self,
        tag: Tag,
        fd: RawFd,
        callback: PooledCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.schedule_pooled(tag, fd, true, callback)
    }

    /// Sends a pool buffer's bytes (the echo of a pooled receive, without a copy); the
    /// callback gets the byte count (possibly short: [`PoolBuf::advance`] past it and send
    /// again) and the buffer, which goes back to the pool when dropped.
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `buf`.
    pub fn send_pooled(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: PoolBuf,
        callback: PoolSendCallback<C>,
    ) -> Result<OpId, ScheduleError<PoolBuf>> {
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(buf));
        };
        let args = Args::SendPooled { fd, buf };
        Ok(self.start(idx, tag, args, Callback::PoolSend(callback)))
    }

    /// Connects the socket `fd` to `addr`.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn connect(
        &mut self,
        tag: Tag,
        fd: RawFd,
        addr: SocketAddr,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let args = move || Args::Connect { fd, addr };
        self.schedule(tag, args, Callback::Unit(callback), ())
    }

    /// Receives into `buf`'s spare capacity (`buf[len..capacity]`); the callback gets the
    /// byte count (0 at end of stream) and `buf` with its length extended by it.
    ///
    /// # Errors
    /// When every slot is in flight, or `buf` has no spare capacity; the error returns `buf`.
    pub fn recv(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: Vec<u8>,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        self.schedule_receive(tag, fd, buf, callback)
    }

    /// Sends `buf[..]`; the callback gets the byte count sent (possibly short) and `buf`
    /// unchanged. A reset peer is an error result (`EPIPE`, `ECONNRESET`), never a signal.
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `buf`.
    pub fn send(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: Vec<u8>,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        let args = |fd, buf| Args::Send { fd, buf };
        self.schedule_buf(tag, fd, buf, args, callback)
    }

    /// Sends the bytes of `bufs`, in order, as one message (one `sendmsg`: a header, a body
    /// and an echo gathered without a copy); the callback gets the byte count sent, possibly
    /// short, and `bufs` unchanged: [`OutBuf::consume`] drops what was sent, and the rest is
    /// sent by scheduling again. At most [`crate::GATHER_MAX`] buffers go out per send (the
    /// count then covers those only). A list of one buffer is sent as [`Io::send`] would
    /// (`send`, `IORING_OP_SEND`): as cheap as a plain send. Empty buffers are allowed, and
    /// a send of no bytes completes with 0. As for [`Io::send`], a reset peer is an error
    /// result, never a signal. The buffers are dropped (a pool buffer goes back to its pool)
    /// when the program drops the list it gets back.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// use dispatch_loop::{Io, Options, OutBuf, Tag};
    ///
    /// type Sent = (std::io::Result<usize>, Vec<OutBuf>);
    ///
    /// fn sent(n: &mut usize, _: &mut Io<usize>, _: Tag, (sent, _bufs): Sent) {
    ///     *n = sent.expect("send");
    /// }
    ///
    /// let mut io: Io<usize> = Io::new(&Options::new(8)).expect("a backend");
    /// let (socket, mut peer) = UnixStream::pair().unwrap();
    /// let reply = vec![OutBuf::from("HTTP/1.1 200 OK\r\n\r\n"), OutBuf::from(b"hi".to_vec())];
    /// io.send_vectored(0, socket.as_raw_fd(), reply, sent).expect("a free slot");
    /// let mut n = 0;
    /// io.run_until_idle(&mut n).unwrap();
    /// assert_eq!(n, 21);
    /// let mut got = [0; 21];
    /// peer.read_exact(&mut got).unwrap();
    /// assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\nhi");
    /// ```
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `bufs`.
    pub fn send_vectored(
        &mut self,
        tag: Tag,
        fd: RawFd,
        bufs: Vec<OutBuf>,
        callback: VectoredCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<OutBuf>>> {
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(bufs));
        };
        let args = Args::SendVectored { fd, bufs };
        Ok(self.start(idx, tag, args, Callback::Vectored(callback)))
    }

    /// Shuts down the reading side, writing side, or both of the socket `fd`.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn shutdown(
        &mut self,
        tag: Tag,
        fd: RawFd,
        how: Shutdown,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        self.schedule(
            tag,
            move || Args::Shutdown { fd, how },
            Callback::Unit(callback),
            (),
        )
    }

    /// Closes `fd`, which the operation owns from now on. A close cannot be cancelled (a
    /// cancel of it answers `EALREADY`), and is never retried: whatever close returns, the
    /// descriptor is released.
    ///
    /// Close a descriptor only once no operation on it is in flight (cancel them and wait
    /// for their callbacks first): see "Descriptors" on [`Io`].
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `fd`, still open.
    pub fn close(
        &mut self,
        tag: Tag,
        fd: OwnedFd,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<OwnedFd>> {
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(fd));
        };
        Ok(self.start(idx, tag, Args::Close { fd }, Callback::Unit(callback)))
    }

    /// Completes with `Ok(())` after `timeout_ns` nanoseconds (never earlier), or with
    /// `ECANCELED` if cancelled first.
    ///
    /// The time counts from the moment the loop hands the timeout to its backend: on io_uring
    /// when its SQE is queued (at this call when the submission queue has room, else when
    /// the overflow queue drains) and the kernel starts it at the next submission; on the
    /// readiness backends and the simulator at the next turn's flush. Its deadline is that
    /// moment plus `timeout_ns`, and expired timeouts run their callbacks in deadline order
    /// on every backend, even when several expire within one turn: io_uring may post them
    /// in another order (on Linux 6.1, two expiries reaped together came latest first), and
    /// the loop sorts them. Timeouts with equal deadlines run in either order.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn timeout(
        &mut self,
        tag: Tag,
        timeout_ns: u64,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.schedule(
            tag,
            move || Args::Timeout { timeout_ns },
            Callback::Unit(callback),
            (),
        )
    }

    /// Cancels the operation `target`. The target's callback still runs exactly once (a
    /// multishot's final callback: see below): with `ECANCELED`, or with its real result if it
    /// completed first (an accepted socket or opened file then reaches its callback and is
    /// never leaked). This callback's answer depends only on the target at the time of this
    /// call, never on a race with the kernel, so it is the same on every backend:
    /// - `Ok(())` when the target's final callback has not run yet: the target is cancelled,
    ///   or it completed first and its callback says so (it may have completed already,
    ///   its result waiting for its callback in this very turn);
    /// - `ENOENT` when the target's final callback has already run (its id is stale: there
    ///   is nothing to cancel);
    /// - `EALREADY` when the target is a close (which cannot be stopped), or a cancel of the
    ///   same target is already in flight (or its deadline fired).
    ///
    /// Cancelling a cancel is allowed and pointless: it normally answers `ENOENT` and leaves
    /// the first cancel to do its work.
    ///
    /// # Multishot operations
    /// A multishot ([`Io::recv_multishot`], [`Io::accept_multishot`]) cancelled before its
    /// final callback ran, from one of its own callbacks say, answers `Ok(())` too. The
    /// callbacks of the results it already received still run, in order (bytes received are
    /// never dropped), and the last callback is the final one (`more == false`): `ECANCELED`,
    /// or the result that ended the multishot (the end of stream, an error) if that came
    /// first. What "already received" covers differs by backend, and only that: io_uring's
    /// kernel multishots take in one turn all that has arrived (buffer after buffer while
    /// the pool lasts, every connection waiting), while the loop's own re-arming (epoll,
    /// kqueue, the simulator, io_uring without kernel multishot) takes one arrival a turn.
    /// So after a cancel from the first callback of a burst, io_uring may deliver more of
    /// the burst before the final callback; elsewhere the rest stays in the socket (or the
    /// backlog) for the next receive (or accept). Nothing is lost either way.
    ///
    /// A cancel is never lost: on io_uring a target running in a kernel worker is
    /// interrupted (its `EINTR`, which may come turns after the cancel's `Ok`, is reported as
    /// `ECANCELED`), and where the kernel answers "not found" or "already running" while the
    /// target goes on (a worker just taking it up can be missed), the loop sends the cancel
    /// again after 1 ms, 2 ms, 4 ms, ... (at most a second apart) until the target's result
    /// comes (`Stats::cancels_resent` counts the resends); a "not found" is held until then,
    /// so the answer (`Ok(())`) comes after the target's result.
    ///
    /// Cancels have a budget of their own, `Options::ops_max` beside the operations', so a
    /// loop whose every operation slot is in use can still cancel each of its operations.
    ///
    /// # Errors
    /// [`crate::ScheduleErrorKind::SlotsExhausted`] when `ops_max` cancels are already in flight.
    pub fn cancel(
        &mut self,
        tag: Tag,
        target: OpId,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let Some(idx) = self.slots.alloc(Budget::Cancel) else {
            return Err(self.exhausted(()));
        };
        let slot = &mut self.slots[idx];
        slot.tag = tag;
        slot.callback = Callback::Unit(callback);
        self.slots.build_args(idx, || Args::Cancel { target });
        let id = self.slots.id(idx);
        let Some(target_idx) = self.slots.lookup(target) else {
            self.complete_now(idx, -libc::ENOENT);
            return Ok(id);
        };
        assert_ne!(target_idx, idx, "a new cancel cannot target itself");
        let target_slot = &self.slots[target_idx];
        let target_args = self.slots.args(target_idx);
        let is_close = matches!(target_args, Args::Close { .. });
        let is_cancel = matches!(target_args, Args::Cancel { .. });
        match target_slot.state {
            // The same answer whether the first cancel is in the kernel or already took a
            // parked target out.
            _ if target_slot.cancelling => self.complete_now(idx, -libc::EALREADY),
            _ if is_close => self.complete_now(idx, -libc::EALREADY),
            // A cancel handed to the backend is answered there, and nothing stops it.
            State::Kernel | State::Held | State::Completed if is_cancel => {
                self.complete_now(idx, -libc::ENOENT);
            }
            // The target's final result is reaped (a multishot's may follow results of its
            // own still waiting for their callbacks): its callbacks run as they are, the
            // last one final, and the cancel came before that one, so it answers `Ok`.
            State::Completed => self.complete_now(idx, 0),
            State::Held => unreachable!("only a cancel's answer is held"),
            State::Overflow | State::BufferWait | State::Again => {
                // A parked cancel taken out never reaches its own target: that target can be
                // cancelled again.
                if let Args::Cancel { target: inner } = *self.slots.args(target_idx) {
                    self.end_cancelling(inner, target_idx);
                }
                self.slots[target_idx].cancelling = true;
                self.slots[target_idx].special = true;
                self.unlink_waiting(target_idx);
                self.complete_now(target_idx, -libc::ECANCELED);
                self.complete_now(idx, 0);
            }
            State::Kernel => {
                let target_slot = &mut self.slots[target_idx];
                target_slot.cancelling = true;
                target_slot.cancel_by = idx;
                target_slot.special = true;
                self.enqueue(idx);
            }
            State::Free => unreachable!("lookup never returns a free slot"),
        }
        Ok(id)
    }

    /// The cancel in slot `cancel` of `target` is over (answered, or itself cancelled):
    /// `target`, if still in flight, can be cancelled again, unless another cancel is the one
    /// in flight for it (a duplicate answered `EALREADY` ends without touching it).
    pub(super) fn end_cancelling(&mut self, target: OpId, cancel: u32) {
        if let Some(target_idx) = self.slots.lookup(target) {
            let slot = &mut self.slots[target_idx];
            // A target the cancel found running (io_uring's `EALREADY`) is being interrupted:
            // it stays cancelling until it ends, so that its `EINTR` (or `ERESTARTSYS`),
            // which may come turns later, means "cancelled" and is not submitted again.
            if !slot.timed_out && slot.cancel_by == cancel && !slot.resending() {
                slot.cancelling = false;
                slot.cancel_by = u32::MAX;
            }
        }
    }

    /// Does nothing, and completes with `Ok(())` on the next turn after going through the
    /// backend like any operation: it measures the loop's own cost per operation, and lets a
    /// callback continue work after the completions already pending.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn nop(&mut self, tag: Tag, callback: UnitCallback<C>) -> Result<OpId, ScheduleError<()>> {
        self.schedule(tag, || Args::Nop, Callback::Unit(callback), ())
    }

    /// Completes after the next [`crate::Waker::wake`] (at once if a wake-up is already
    /// pending), with the number of wake-ups it coalesced. With several waits pending, a
    /// wake-up completes one of them (the oldest); each needs a wake-up of its own. Keeps
    /// the loop busy until then, so `run_until_idle` will not return while it is pending.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn wait_wakeup(
        &mut self,
        tag: Tag,
        callback: CountCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.schedule(tag, || Args::Wakeup, Callback::Count(callback), ())
    }
}
