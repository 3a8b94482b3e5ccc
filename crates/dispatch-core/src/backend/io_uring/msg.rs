//! The SQEs of message operations: `SENDMSG` and `RECVMSG` pointing at the header the
//! message keeps in its own heap block (`Msg`), which lives in the slot's arguments until
//! the completion is reaped. Both opcodes date from 5.3, older than the loop's required
//! set, so there is nothing to probe or mask.

use sys_uring::opcode;
use sys_uring::squeue::Entry;
use sys_uring::types::Fd;

use crate::operation::Args;

/// The SQE of a `sendmsg` or `recvmsg`. The header is prepared here, at push: the pointers
/// it holds (buffers, address, control storage) are the message's own and do not move while
/// the arguments stay in the table (`push`'s contract).
pub(super) fn entry(args: &mut Args) -> Entry {
    match args {
        Args::SendMsg { fd, msg } => {
            // MSG_NOSIGNAL: a closed peer is EPIPE, never a SIGPIPE.
            opcode::SendMsg::new(Fd(*fd), msg.prepare_send())
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        }
        Args::RecvMsg { fd, msg } => opcode::RecvMsg::new(Fd(*fd), msg.prepare_recv())
            .flags(libc::MSG_CMSG_CLOEXEC as u32)
            .build(),
        _ => unreachable!("{} is not a message operation", args.label()),
    }
}
