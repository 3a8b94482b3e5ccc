//! The loop's errors, in a module below both the loop and its backends: `Io::new`'s
//! `InitError`.

use std::fmt;
use std::io;

use crate::options::BACKEND_ENV;
use crate::stats::BackendKind;

/// Why `Io::new` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum InitError {
    /// The options break a limit; the message names the field.
    InvalidOptions(&'static str),
    /// io_uring cannot be used here; the error says why in words a user can act on.
    #[cfg(target_os = "linux")]
    Unavailable(sys_uring::SetupError),
    /// `DISPATCH_BACKEND` names no backend.
    UnknownBackend(String),
    /// The backend asked for does not exist on this platform (kqueue on Linux, epoll or
    /// io_uring on macOS).
    UnsupportedBackend(BackendKind),
    /// The backend asked for exists but was compiled out: `feature` of `dispatch-loop` is
    /// off (`sim`, without the `sim` feature).
    FeatureDisabled {
        /// The backend asked for.
        backend: BackendKind,
        /// The cargo feature of `dispatch-loop` that builds it.
        feature: &'static str,
    },
    /// Creating the backend's descriptors (its epoll or kqueue instance, its wake-up
    /// descriptor) failed, for example with `EMFILE`.
    Os(io::Error),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::InvalidOptions(message) => write!(f, "invalid options: {message}"),
            #[cfg(target_os = "linux")]
            InitError::Unavailable(error) => write!(f, "io_uring unavailable: {error}"),
            InitError::UnknownBackend(name) => write!(
                f,
                "{BACKEND_ENV}={name:?} names no backend (use auto, io_uring, epoll, kqueue, \
                 kqueue-fake or sim)"
            ),
            InitError::UnsupportedBackend(kind) => {
                write!(f, "the {kind} backend does not exist on this platform")?;
                if *kind == BackendKind::Kqueue {
                    write!(
                        f,
                        " (on Linux, kqueue-fake runs its logic over a kevent double)"
                    )?;
                }
                Ok(())
            }
            InitError::FeatureDisabled { backend, feature } => write!(
                f,
                "the {backend} backend is compiled out: turn on dispatch-loop's `{feature}` \
                 feature to use it"
            ),
            InitError::Os(error) => write!(f, "creating the loop failed: {error}"),
        }
    }
}

impl std::error::Error for InitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InitError::InvalidOptions(_)
            | InitError::UnknownBackend(_)
            | InitError::UnsupportedBackend(_)
            | InitError::FeatureDisabled { .. } => None,
            #[cfg(target_os = "linux")]
            InitError::Unavailable(error) => Some(error),
            InitError::Os(error) => Some(error),
        }
    }
}

/// Why [`crate::Io::set_deadline`] refused a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadlineError {
    /// The operation already completed (or the id is stale): there is nothing to time out.
    NotInFlight,
    /// A close or a cancel: neither can be stopped, so neither can time out.
    NotCancellable,
}

impl fmt::Display for DeadlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeadlineError::NotInFlight => "the operation is no longer in flight",
            DeadlineError::NotCancellable => "a close or a cancel cannot have a deadline",
        })
    }
}

impl std::error::Error for DeadlineError {}
