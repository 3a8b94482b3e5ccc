//! The SQEs of message operations: `SENDMSG` and `RECVMSG` pointing at the header the
//! message keeps in its own heap block (`Msg`), which lives in the slot's arguments until
//! the completion is reaped. Both opcodes date from 5.3, older than the loop's required
//! set, so there is nothing to probe or mask.

use sys_uring::opcode;
use sys_uring::squeue::Entry;
use sys_uring::types::Fd;

use super::sqe::clamp_len;
use crate::operation::Args;

/// The SQE of a `sendmsg` or `recvmsg`. The header is prepared here, at push: the pointers
/// it holds (buffers, address, control storage) are the message's own and do not move while
/// the arguments stay in the table (`push`'s contract).
///
/// `send_addr`: the kernel's `SEND` takes a destination address (6.1, probed by its
/// sibling opcode `SENDMSG_ZC`, masked with `UringOptions::multishot`), so a message of
/// one buffer to an address with no descriptors goes as a `SEND` with it, which
/// the kernel prepares for less than a `SENDMSG` (no header and iovec to copy in: a UDP
/// echo's every reply).
pub(super) fn entry(args: &mut Args, send_addr: bool) -> Entry {
    match args {
        Args::SendMsg { fd, msg } => {
            let hdr = msg.prepare_send();
            // MSG_NOSIGNAL: a closed peer is EPIPE, never a SIGPIPE.
            if let Some((buf, len, name, name_len)) = msg.plain_send().filter(|_| send_addr) {
                return opcode::Send::new(Fd(*fd), buf, clamp_len(len))
                    .dest_addr(name)
                    .dest_addr_len(name_len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build();
            }
            opcode::SendMsg::new(Fd(*fd), hdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        }
        Args::RecvMsg { fd, msg } => opcode::RecvMsg::new(Fd(*fd), msg.prepare_recv())
            .flags(libc::MSG_CMSG_CLOEXEC as u32)
            .build(),
        _ => unreachable!("{} is not a message operation", args.label()),
    }
}
