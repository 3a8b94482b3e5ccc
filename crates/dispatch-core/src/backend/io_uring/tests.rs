//! Unit tests of the io_uring backend on this kernel (each skips where io_uring is
//! unusable).

use std::borrow::Borrow;

use super::*;

/// A backend on this kernel, or `None` (saying why) where io_uring is unusable.
fn backend_or_skip(options: &Options, pool: Option<&mut Pool>) -> Option<IoUringBackend> {
    match IoUringBackend::new(options, pool) {
        Ok(backend) => Some(backend),
        Err(error) => {
            eprintln!("skipped: {error}");
            None
        }
    }
}

/// Where a timespec field's timespec lives, boxed or not.
fn address<T: Borrow<Timespec>>(field: &T) -> *const Timespec {
    field.borrow()
}

/// The wait timeout's SQE may be read by the kernel at an enter after the `Io` moved (a
/// submission cut short by a failed SQE leaves it in the SQ): what it points at must not
/// move with the backend.
#[test]
fn the_wait_timeout_timespec_does_not_move_with_the_backend() {
    let Some(backend) = backend_or_skip(&Options::new(8), None) else {
        return;
    };
    let before = address(&backend.wait_timespec);
    let moved = Box::new(backend);
    assert_eq!(address(&moved.wait_timespec), before);
    assert_eq!(address(&moved.wait_timespec), before, "and again");
}

/// While the provided-buffer ring names the pool's buffers, the backend itself keeps the
/// pool's memory alive, so the loop's field order cannot free it first.
#[test]
fn the_backend_keeps_the_pool_memory_its_ring_names() {
    let mut pool = Pool::new(4, 64);
    let Some(backend) = backend_or_skip(&Options::new(8), Some(&mut pool)) else {
        return;
    };
    if !backend.pbuf_ring {
        return eprintln!("skipped: no provided-buffer ring on this kernel");
    }
    let shared = Rc::clone(pool.shared());
    assert_eq!(
        Rc::strong_count(&shared),
        3,
        "the pool, the backend, this test"
    );
    drop(pool);
    assert_eq!(Rc::strong_count(&shared), 2, "the backend holds it still");
    drop(backend);
    assert_eq!(Rc::strong_count(&shared), 1, "released with the ring");
}
