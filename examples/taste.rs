//! The README's "A taste": an echo over one socket, as a whole program. The callbacks below
//! are the README's snippet, character for character (xtask's tidy checks it).
//!
//! ```text
//! cargo run -p examples --example taste
//! ```

use dispatch_loop::{BufResult, Io, Options, Tag};

struct Ctx {
    socket: std::os::fd::RawFd,
}

fn on_recv(ctx: &mut Ctx, io: &mut Io<Ctx>, tag: Tag, (result, buf): BufResult) {
    match result {
        // End of stream, or an error: stop.
        Ok(0) | Err(_) => {}
        // Echo it back.
        Ok(_) => send(ctx, io, tag, buf),
    }
}

fn on_sent(ctx: &mut Ctx, io: &mut Io<Ctx>, tag: Tag, (result, mut buf): BufResult) {
    match result {
        // A short send: send the rest.
        Ok(n) if n < buf.len() => {
            buf.drain(..n);
            send(ctx, io, tag, buf);
        }
        // All sent: receive again.
        Ok(_) => {
            buf.clear();
            if let Err(error) = io.recv(tag, ctx.socket, buf, on_recv) {
                eprintln!("{error}"); // every slot is in flight
            }
        }
        Err(_) => {}
    }
}

fn send(ctx: &mut Ctx, io: &mut Io<Ctx>, tag: Tag, buf: Vec<u8>) {
    if let Err(error) = io.send(tag, ctx.socket, buf, on_sent) {
        eprintln!("{error}"); // every slot is in flight
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    let (socket, mut peer) = std::os::unix::net::UnixStream::pair()?;
    // One operation in flight at a time (a recv or a send): one slot is enough.
    let mut io: Io<Ctx> = Io::new(&Options::new(1))?;
    let mut ctx = Ctx {
        socket: socket.as_raw_fd(),
    };
    io.recv(1, ctx.socket, Vec::with_capacity(4096), on_recv)?;
    peer.write_all(b"hello, loop")?;
    peer.shutdown(std::net::Shutdown::Write)?;
    // recv, send, recv ... until the recv that sees end of stream.
    io.run_until_idle(&mut ctx)?;
    drop(socket);
    let mut echoed = String::new();
    peer.read_to_string(&mut echoed)?;
    assert_eq!(echoed, "hello, loop");
    let stats = io.stats();
    println!(
        "taste: echoed {echoed:?} on {}: {} operations, {} syscalls",
        stats.backend, stats.ops_completed, stats.syscalls
    );
    Ok(())
}
