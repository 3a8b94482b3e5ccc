//! The accept loop: a multishot accept that, when the process runs out of descriptors,
//! pauses for `NetOptions::accept_pause_ns` instead of spinning, then arms itself again; and
//! closing a socket the server cannot take.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use dispatch_loop::{Io, Shot, Tag};

use super::{open, shortage, Handler, Net, ACCEPT_TAG, QUIET_TAG};

pub(super) fn arm_accept<H: Handler>(ctx: &mut H, io: &mut Io<H>) -> io::Result<()> {
    let net = ctx.net();
    let fd = net.listener.as_ref().expect("a listener").as_raw_fd();
    let id = io
        .accept_multishot(ACCEPT_TAG, fd, on_accept::<H>)
        .map_err(|error| io::Error::other(error.to_string()))?;
    net.accept = Some(id);
    net.accept_paused = false;
    Ok(())
}

/// Re-arms the accept from a callback; without a free slot, pauses accepting instead (and
/// without one for the pause timer either, accepting stops: both logged).
fn rearm_accept<H: Handler>(ctx: &mut H, io: &mut Io<H>) {
    if arm_accept(ctx, io).is_ok() {
        return;
    }
    let net = ctx.net();
    shortage(net, "the accept");
    pause_accept(net, io);
}

fn pause_accept<H: Handler>(net: &mut Net, io: &mut Io<H>) {
    net.accept_paused = true;
    let pause = net.options.accept_pause_ns;
    if io.timeout(ACCEPT_TAG, pause, on_accept_pause::<H>).is_err() {
        net.accept_paused = false;
        shortage(net, "the accept's back-off timer (accepting stopped)");
    }
}

fn on_accept<H: Handler>(ctx: &mut H, io: &mut Io<H>, _: Tag, shot: Shot<OwnedFd>) {
    let net = ctx.net();
    net.handling = None;
    if !shot.more {
        net.accept = None;
    }
    match shot.result {
        Ok(socket) => open(ctx, io, socket),
        Err(error) => on_accept_error(ctx, io, &error),
    }
    let net = ctx.net();
    if net.accept.is_none() && !net.accept_paused && !net.stopping {
        // The kernel ended the multishot on a transient error (or with a connection): go on.
        rearm_accept(ctx, io);
    }
    if ctx.net().stopping && ctx.net().accept.is_none() {
        ctx.net().listener = None;
    }
}

fn on_accept_error<H: Handler>(ctx: &mut H, io: &mut Io<H>, error: &io::Error) {
    let net = ctx.net();
    match error.raw_os_error() {
        // A stop cancelled it.
        Some(libc::ECANCELED) if net.stopping => {}
        // That connection is gone (aborted by its peer, refused by a firewall rule); the
        // next is not: accept on at once.
        // (ECANCELED without a stop: the accept was interrupted in a kernel worker.)
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR | libc::ECANCELED) => {}
        // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or anything else:
        // pause accepting (the connected clients keep being served, and closing them frees
        // descriptors), then try again; never spin. Logged once an episode: the episode
        // ends once accepts have gone a whole pause without failing.
        _ => {
            net.accept_failures += 1;
            if !net.episode {
                net.episode = true;
                net.stats.accept_pauses += 1;
                eprintln!(
                    "dispatch-net: accept: {error}; pausing accepts for {} ms at a time \
                     until descriptors free up",
                    net.options.accept_pause_ns / 1_000_000
                );
            }
            pause_accept(net, io);
        }
    }
}

fn on_accept_pause<H: Handler>(ctx: &mut H, io: &mut Io<H>, _: Tag, _: io::Result<()>) {
    if ctx.net().stopping {
        ctx.net().listener = None;
        return;
    }
    rearm_accept(ctx, io);
}

/// Starts the timer that ends an episode of accept failures if none follows for a pause.
pub(super) fn check_quiet<H: Handler>(net: &mut Net, io: &mut Io<H>) {
    if !net.episode || net.quiet_mark.is_some() || net.stopping {
        return;
    }
    // Without a slot the episode goes on until a later accept finds one.
    if io
        .timeout(QUIET_TAG, net.options.accept_pause_ns, on_quiet::<H>)
        .is_ok()
    {
        net.quiet_mark = Some(net.accept_failures);
    }
}

fn on_quiet<H: Handler>(ctx: &mut H, _: &mut Io<H>, _: Tag, _: io::Result<()>) {
    let net = ctx.net();
    let mark = net.quiet_mark.take().expect("a quiet timer has a mark");
    if net.accept_failures == mark {
        net.episode = false;
    }
}

/// Closes a socket the server will not serve (accepted while stopping, or past a full
/// table) through the loop, so that on the simulator the simulated connection closes too;
/// at once (dropping the `OwnedFd`) only when no slot is free for the close.
pub(super) fn close_unserved<H>(io: &mut Io<H>, socket: OwnedFd) {
    if let Err(error) = io.close(ACCEPT_TAG, socket, |_, _, _, _| {}) {
        drop(error.value);
    }
}
