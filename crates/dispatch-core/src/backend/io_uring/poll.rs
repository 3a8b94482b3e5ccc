//! The SQE of a poll ([`crate::Io::poll`]): one `POLL_ADD`, multishot where the loop uses
//! the kernel's multishots.

use sys_uring::opcode;
use sys_uring::squeue::Entry;
use sys_uring::types::Fd;

use crate::operation::Args;

/// A `POLL_ADD` for `args`, with `IORING_POLL_ADD_MULTI` (5.13) for a multishot when
/// `kernel_multishot` (the kernel has multishot receive, 6.0, and `UringOptions::multishot`
/// does not mask it); otherwise a single poll, which the loop re-arms after each result.
/// It points at nothing: the mask travels in the SQE.
pub(super) fn entry(args: &Args, kernel_multishot: bool) -> Entry {
    let Args::Poll {
        fd,
        events,
        multishot,
    } = *args
    else {
        unreachable!("a poll's entry for a {}", args.label())
    };
    opcode::PollAdd::new(Fd(fd), events)
        .multi(multishot && kernel_multishot)
        .build()
}
