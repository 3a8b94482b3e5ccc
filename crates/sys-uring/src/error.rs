//! Why an io_uring could not be set up, in words a user can act on.
//!
//! `io_uring_setup(2)` fails for reasons that look alike from the outside (EPERM from a seccomp
//! profile, EPERM from `kernel.io_uring_disabled`, ENOSYS from an old kernel or from gVisor,
//! ENOMEM from `RLIMIT_MEMLOCK`). Callers that fall back to another backend record the reason;
//! callers that cannot fall back print it.

use std::fmt;
use std::io;

/// The class of reason io_uring is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// `kernel.io_uring_disabled` forbids this process (value 2, or 1 outside `io_uring_group`).
    DisabledBySysctl {
        /// The sysctl's value as read from `/proc/sys/kernel/io_uring_disabled`.
        value: u8,
    },
    /// `io_uring_setup` returned EPERM while the sysctl allows it: a seccomp filter (Docker's
    /// default profile, systemd's `SystemCallFilter`) or an LSM policy (Android, ChromeOS).
    Blocked,
    /// `io_uring_setup` returned ENOSYS: a kernel before 5.1, one built without
    /// `CONFIG_IO_URING`, a sandbox such as gVisor, or a seccomp filter that answers ENOSYS.
    NotImplemented,
    /// `io_uring_setup` returned ENOMEM: kernels before 5.12 charge rings to `RLIMIT_MEMLOCK`.
    MemlockLimit,
    /// `io_uring_setup` returned EINVAL: a set-up flag or size this kernel does not accept.
    InvalidSetup,
    /// The ring works but the kernel lacks an opcode the caller needs.
    MissingOpcode {
        /// The opcode's name, as in `io_uring_enter(2)`.
        name: &'static str,
    },
    /// Any other errno.
    Other,
}

/// An io_uring ring could not be created or lacks what the caller needs.
#[derive(Debug)]
pub struct SetupError {
    /// The class of reason, for programs that branch on it.
    pub unavailable: Unavailable,
    /// The OS error behind it (for `MissingOpcode`, `EOPNOTSUPP`).
    pub source: io::Error,
}

impl Unavailable {
    /// A short phrase for logs and stats ("blocked by seccomp or a security policy").
    pub fn summary(self) -> &'static str {
        match self {
            Unavailable::DisabledBySysctl { .. } => "disabled by sysctl kernel.io_uring_disabled",
            Unavailable::Blocked => "blocked by seccomp or a security policy (EPERM)",
            Unavailable::NotImplemented => "not implemented by this kernel or sandbox (ENOSYS)",
            Unavailable::MemlockLimit => "ring memory over RLIMIT_MEMLOCK (ENOMEM)",
            Unavailable::InvalidSetup => "set-up flags or sizes rejected (EINVAL)",
            Unavailable::MissingOpcode { .. } => "a required opcode is missing",
            Unavailable::Other => "io_uring_setup failed",
        }
    }
}

impl SetupError {
    /// Classifies an error returned by `io_uring_setup(2)`.
    pub fn from_setup(source: io::Error) -> SetupError {
        let unavailable = match source.raw_os_error() {
            Some(libc::EPERM) => match io_uring_disabled_sysctl() {
                Some(value) if value > 0 => Unavailable::DisabledBySysctl { value },
                _ => Unavailable::Blocked,
            },
            Some(libc::ENOSYS) => Unavailable::NotImplemented,
            Some(libc::ENOMEM) => Unavailable::MemlockLimit,
            Some(libc::EINVAL) => Unavailable::InvalidSetup,
            _ => Unavailable::Other,
        };
        SetupError {
            unavailable,
            source,
        }
    }

    /// The error for a kernel whose probe lacks opcode `name`.
    pub fn missing_opcode(name: &'static str) -> SetupError {
        SetupError {
            unavailable: Unavailable::MissingOpcode { name },
            source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        }
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unavailable {
            Unavailable::DisabledBySysctl { value } => write!(
                f,
                "io_uring is disabled by sysctl kernel.io_uring_disabled={value} \
                 (set it to 0, or for 1 add this user to kernel.io_uring_group)"
            )?,
            Unavailable::Blocked => write!(
                f,
                "io_uring_setup was denied (EPERM) by a seccomp filter or security policy \
                 (Docker's default profile blocks it: run with a profile that allows \
                 io_uring_setup/io_uring_enter/io_uring_register)"
            )?,
            Unavailable::NotImplemented => write!(
                f,
                "io_uring_setup is not implemented (ENOSYS): the kernel is older than 5.1, \
                 built without CONFIG_IO_URING, or a sandbox (gVisor, seccomp) hides it"
            )?,
            Unavailable::MemlockLimit => write!(
                f,
                "io_uring ring memory exceeds RLIMIT_MEMLOCK (ENOMEM): raise it with \
                 `ulimit -l` or use fewer entries (kernels from 5.12 do not charge it)"
            )?,
            Unavailable::InvalidSetup => write!(
                f,
                "io_uring_setup rejected the ring's size or flags (EINVAL): the kernel is \
                 older than a requested flag; run the probe to see which it accepts"
            )?,
            Unavailable::MissingOpcode { name } => write!(
                f,
                "the kernel's io_uring lacks opcode {name} (kernel 5.11 or later has all \
                 the opcodes this loop uses)"
            )?,
            Unavailable::Other => write!(f, "io_uring_setup failed")?,
        }
        write!(f, ": {}", self.source)
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Reads `/proc/sys/kernel/io_uring_disabled` (kernel 6.6+); `None` where it does not exist.
pub(crate) fn io_uring_disabled_sysctl() -> Option<u8> {
    let text = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_setup_errno() {
        let check = |errno: i32, want: Unavailable| {
            let error = SetupError::from_setup(io::Error::from_raw_os_error(errno));
            assert_eq!(error.source.raw_os_error(), Some(errno));
            // EPERM depends on this machine's sysctl; both answers are accurate descriptions.
            if errno == libc::EPERM {
                assert!(matches!(
                    error.unavailable,
                    Unavailable::Blocked | Unavailable::DisabledBySysctl { .. }
                ));
            } else {
                assert_eq!(error.unavailable, want);
            }
            assert!(!error.to_string().is_empty());
        };
        check(libc::EPERM, Unavailable::Blocked);
        check(libc::ENOSYS, Unavailable::NotImplemented);
        check(libc::ENOMEM, Unavailable::MemlockLimit);
        check(libc::EINVAL, Unavailable::InvalidSetup);
        check(libc::EBADF, Unavailable::Other);
        let message = SetupError::missing_opcode("IORING_OP_SHUTDOWN").to_string();
        assert!(message.contains("IORING_OP_SHUTDOWN"), "{message}");
    }
}
