//! File workers: a fixed set of threads, started with the loop, that perform file operations
//! off the loop's thread on epoll and kqueue (`Options::file_workers`), so that a slow disk
//! (an `fsync` of hundreds of MiB) never stalls the loop's sockets.
//!
//! How a job goes: the engine moves the operation's arguments out of the argument table
//! into a `Job` and appends it to `jobs`; a worker takes it, runs `file::perform` (the same
//! syscalls the inline path makes), and appends the job, result and all, to `done`; when
//! `done` was empty it triggers the loop's workers signal (an eventfd on epoll, an
//! `EVFILT_USER` event on kqueue: not the program's waker, whose count `wait_wakeup`
//! reports). The engine takes `done` back in its next flush, moves each job's arguments
//! back into their slot, and completes the operation like any other.
//!
//! A job owns its arguments while a worker has it, so there is no shared memory between the
//! loop and a worker beyond the two queues: a worker never writes into the argument table,
//! and whatever happens to the loop (moved, dropped, a callback panicking), nothing the
//! worker writes into can be freed under it. io_uring needs the table to stay put because
//! the kernel holds pointers into it; a thread can simply be given the value (a move of one
//! `Args`, a few dozen bytes, each way).
//!
//! The queues: one `Mutex` over two `VecDeque`s whose capacity is reserved at start-up for
//! every slot of the loop (an operation is in at most one of them at a time, so neither ever
//! grows: no allocation per operation), and a `Condvar` that idle workers sleep on. Not a
//! lock-free queue (`crossbeam_queue::ArrayQueue`): idle workers must sleep, which takes a
//! lock and a condition variable anyway; a queued job must be taken back out of the middle
//! for a cancel, which a ring buffer of that kind cannot do; the lock is held for a few
//! pointer moves while a job costs a syscall and a thread hand-off; and it keeps the
//! dependencies to io-uring, rustix and libc.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::backend::file;
use crate::operation::Args;
use crate::options::FILE_WORKERS_MAX;
use crate::stats::{BackendKind, Stats};
use crate::waker::Waker;

/// One file operation, on its way to a worker and back.
pub(crate) struct Job {
    pub(crate) user_data: u64,
    pub(crate) args: Args,
    /// The result, once performed (`>= 0` or `-errno`).
    pub(crate) result: i32,
    /// Syscalls the worker made for it.
    pub(crate) syscalls: u64,
}

// SAFETY: a `Job` is made only by `Job::new`, which asserts that its arguments are a file
// operation's (`file::is_file`), and the worker changes them only through `file::perform`,
// which keeps the variant. Those variants hold descriptor numbers, integers, `CString`s,
// a `Box` of a plain C struct, and `Bytes`/`BytesList` (`Vec<u8>` or `AlignedBuf`, both
// `Send`): nothing tied to the loop's thread. What makes `Args` itself `!Send` (the pool's
// `Rc` in `SendPooled` and in `OutBuf`s) is in other variants, which never travel.
unsafe impl Send for Job {}

impl Job {
    fn new(user_data: u64, args: Args) -> Job {
        assert!(
            file::is_file(&args),
            "{} is not a file operation",
            args.label()
        );
        Job {
            user_data,
            args,
            result: 0,
            syscalls: 0,
        }
    }
}

/// The queues the loop and its workers share.
struct Queues {
    /// Jobs no worker has taken yet, oldest first.
    jobs: VecDeque<Job>,
    /// Jobs performed (or taken back by a cancel), not yet collected by the loop.
    done: VecDeque<Job>,
    /// Jobs a worker is performing now.
    running: u32,
    /// The loop is being dropped: workers take no more jobs and exit.
    stopping: bool,
    /// Workers that have started and are ready for jobs.
    started: u32,
}

struct Shared {
    queues: Mutex<Queues>,
    /// Idle workers sleep here until a job arrives or the loop stops.
    work: Condvar,
    /// `Workers::start` sleeps here until every worker has started.
    ready: Condvar,
    /// Wakes the loop when `done` stops being empty.
    signal: Waker,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A worker never panics while holding the lock (a panic in a worker aborts the
        // process, see `worker`), nor does the loop: poisoning cannot carry a broken state.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The worker threads of one loop, and the queues they share with it.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers for a loop of `slots_max` slots; each completion is announced
    /// through `signal`.
    pub(crate) fn start(count: u32, slots_max: u32, signal: Waker) -> io::Result<Workers> {
        assert!(count > 0 && count <= FILE_WORKERS_MAX);
        assert!(slots_max > 0);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues {
                jobs: VecDeque::with_capacity(slots_max as usize),
                done: VecDeque::with_capacity(slots_max as usize),
                running: 0,
                stopping: false,
                started: 0,
            }),
            work: Condvar::new(),
            ready: Condvar::new(),
            signal,
        });
        let mut workers = Workers {
            shared,
            threads: Vec::with_capacity(count as usize),
        };
        for n in 0..count {
            let shared = Arc::clone(&workers.shared);
            let thread = std::thread::Builder::new()
                .name(format!("dispatch-file-{n}"))
                .spawn(move || worker(&shared))?;
            // On an error the workers started so far are stopped and joined by `Drop`.
            workers.threads.push(thread);
        }
        // Every worker's own start-up (the thread's set-up, its statistics) is over before
        // the loop runs, so none of it lands in the loop's steady state: a worker the
        // scheduler started late, or that got its first job late, once showed a start-up
        // allocation in the zero-allocation test, long after the warm-up.
        let mut queues = workers.shared.lock();
        while queues.started < count {
            queues = workers
                .shared
                .ready
                .wait(queues)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(queues);
        Ok(workers)
    }

    /// How many worker threads there are.
    pub(crate) fn count(&self) -> u32 {
        u32::try_from(self.threads.len()).expect("at most FILE_WORKERS_MAX")
    }

    /// Hands the file operation `args` to a worker.
    pub(crate) fn submit(&self, user_data: u64, args: Args) {
        let job = Job::new(user_data, args);
        let mut queues = self.shared.lock();
        assert!(!queues.stopping);
        assert!(
            queues.jobs.len() < queues.jobs.capacity(),
            "the job queue has room for every slot"
        );
        queues.jobs.push_back(job);
        drop(queues);
        self.shared.work.notify_one();
    }

    /// Takes the job `user_data` back if no worker has started it: it moves to `done` with
    /// `-ECANCELED` (collected by the next `collect`). `false` if a worker has it, or had it.
    pub(crate) fn take_back(&self, user_data: u64) -> bool {
        let mut queues = self.shared.lock();
        let Some(at) = queues
            .jobs
            .iter()
            .position(|job| job.user_data == user_data)
        else {
            return false;
        };
        let mut job = queues.jobs.remove(at).expect("found at `at`");
        job.result = -libc::ECANCELED;
        assert!(queues.done.len() < queues.done.capacity());
        queues.done.push_back(job);
        true
    }

    /// Hands every finished job to `f`, oldest first. Call it after consuming the workers
    /// signal, never before: a job finished after this call triggers the signal again.
    pub(crate) fn collect(&self, mut f: impl FnMut(Job)) {
        let mut queues = self.shared.lock();
        while let Some(job) = queues.done.pop_front() {
            f(job);
        }
    }
}

impl Drop for Workers {
    /// Stops the workers. Idle ones (every one, once `Io`'s drop has reaped what they ran)
    /// exit at once and are joined. One still inside a syscall after `Io`'s drop gave up
    /// waiting for it (`DROP_REAP_TIMEOUT`) is left to finish alone: it owns its job's
    /// arguments, so nothing it writes can be freed under it, and it exits when the syscall
    /// returns, dropping the job.
    fn drop(&mut self) {
        let mut queues = self.shared.lock();
        queues.stopping = true;
        let running = queues.running;
        // Jobs never started are dropped here (their operations were cancelled or leaked).
        queues.jobs.clear();
        drop(queues);
        self.shared.work.notify_all();
        if running > 0 {
            eprintln!(
                "dispatch-loop: {running} file operations still running in workers; \
                 leaving their threads to finish them"
            );
            return;
        }
        for thread in self.threads.drain(..) {
            // A worker that panicked has aborted the process already.
            let _ = thread.join();
        }
    }
}

/// Aborts the process if a worker unwinds: a broken invariant there would otherwise lose a
/// job silently, and its loop would wait for it forever.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("dispatch-loop: a file worker panicked; aborting");
            std::process::abort();
        }
    }
}

/// One worker: takes jobs in order and performs them until the loop stops.
fn worker(shared: &Shared) {
    let _abort = AbortOnUnwind;
    // Counts the worker's syscalls for each job; its other fields stay unused.
    let mut stats = Stats::new(BackendKind::Epoll, None);
    {
        let mut queues = shared.lock();
        queues.started += 1;
        shared.ready.notify_all();
    }
    loop {
        let mut job = {
            let mut queues = shared.lock();
            loop {
                if queues.stopping {
                    return;
                }
                if let Some(job) = queues.jobs.pop_front() {
                    queues.running += 1;
                    break job;
                }
                queues = shared
                    .work
                    .wait(queues)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        stats.syscalls = 0;
        job.result = file::perform(&mut job.args, &mut stats);
        let mut queues = shared.lock();
        queues.running -= 1;
        let was_empty = queues.done.is_empty();
        assert!(queues.done.len() < queues.done.capacity());
        // The signal's own syscall is the worker's too (written before the job is posted:
        // the loop reads the count only after collecting it).
        job.syscalls = stats.syscalls + u64::from(was_empty);
        queues.done.push_back(job);
        drop(queues);
        if was_empty {
            // `done` was empty: the loop may be asleep. Only `EAGAIN`-free signals exist
            // (eventfd's full counter and kqueue's user event both count as woken).
            shared.signal.wake().expect("the workers signal");
        }
    }
}
