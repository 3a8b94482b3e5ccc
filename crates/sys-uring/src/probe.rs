//! What the running kernel's io_uring supports: set-up flags, features, opcodes.
//!
//! Every optional feature is probed, never assumed from a kernel version: distributions
//! backport, and seccomp or sysctls can disable io_uring on a new kernel.

use io_uring::opcode;

use crate::error::SetupError;
use crate::ring::{Ring, RingOptions};

/// The opcodes `dispatch-loop` schedules, with their names from `io_uring_enter(2)`.
/// All exist from Linux 5.11.
pub const REQUIRED_OPCODES: &[(u8, &str)] = &[
    (opcode::Accept::CODE, "IORING_OP_ACCEPT"),
    (opcode::Connect::CODE, "IORING_OP_CONNECT"),
    (opcode::Recv::CODE, "IORING_OP_RECV"),
    (opcode::Send::CODE, "IORING_OP_SEND"),
    (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
    (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN"),
    (opcode::Close::CODE, "IORING_OP_CLOSE"),
    (opcode::Read::CODE, "IORING_OP_READ"),
    (opcode::Write::CODE, "IORING_OP_WRITE"),
    (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
    (opcode::OpenAt::CODE, "IORING_OP_OPENAT"),
    (opcode::Timeout::CODE, "IORING_OP_TIMEOUT"),
    (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
    (opcode::Nop::CODE, "IORING_OP_NOP"),
];

/// The first of [`REQUIRED_OPCODES`] missing from `opcodes`.
pub(crate) fn first_missing(opcodes: &io_uring::Probe) -> Option<&'static str> {
    REQUIRED_OPCODES
        .iter()
        .find(|(code, _)| !opcodes.is_supported(*code))
        .map(|(_, name)| *name)
}

/// The kernel's io_uring capabilities.
pub struct Probe {
    /// `IORING_SETUP_SINGLE_ISSUER` accepted.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` accepted (with `SINGLE_ISSUER`).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` accepted.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL` accepted.
    pub submit_all: bool,
    /// `IORING_FEAT_EXT_ARG`: waits can carry a timeout.
    pub ext_arg: bool,
    /// `IORING_FEAT_NODROP`: completions are never dropped on a full CQ.
    pub nodrop: bool,
    opcodes: io_uring::Probe,
}

impl Probe {
    /// Whether the kernel supports `opcode` (one of `sys_uring::opcode::*::CODE`).
    pub fn supports(&self, opcode: u8) -> bool {
        self.opcodes.is_supported(opcode)
    }

    /// The first of [`REQUIRED_OPCODES`] the kernel lacks, if any.
    pub fn missing_required(&self) -> Option<&'static str> {
        first_missing(&self.opcodes)
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("single_issuer", &self.single_issuer)
            .field("defer_taskrun", &self.defer_taskrun)
            .field("coop_taskrun", &self.coop_taskrun)
            .field("submit_all", &self.submit_all)
            .field("ext_arg", &self.ext_arg)
            .field("nodrop", &self.nodrop)
            .field("missing_required", &self.missing_required())
            .finish()
    }
}

/// Probes the kernel: creates a small plain ring (its failure says why io_uring is unusable),
/// then one ring per optional set-up flag, and reads the opcode table with
/// `IORING_REGISTER_PROBE`. Costs a few `io_uring_setup` calls; do it once at start-up.
///
/// # Errors
/// When not even a plain ring can be created, or the kernel cannot report its opcodes.
pub fn probe() -> Result<Probe, SetupError> {
    let plain = Ring::new(&RingOptions::new(2))?;
    let accepts = |options: RingOptions| Ring::new(&options).is_ok();
    let base = RingOptions::new(2);
    let single_issuer = accepts(RingOptions {
        single_issuer: true,
        ..base
    });
    let defer_taskrun = single_issuer
        && accepts(RingOptions {
            single_issuer: true,
            defer_taskrun: true,
            ..base
        });
    let coop_taskrun = accepts(RingOptions {
        coop_taskrun: true,
        ..base
    });
    let submit_all = accepts(RingOptions {
        submit_all: true,
        ..base
    });

    let opcodes = plain.opcodes().map_err(SetupError::from_setup)?;
    Ok(Probe {
        single_issuer,
        defer_taskrun,
        coop_taskrun,
        submit_all,
        ext_arg: plain.has_ext_arg(),
        nodrop: plain.has_nodrop(),
        opcodes,
    })
}
