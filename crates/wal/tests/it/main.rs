//! dispatch-wal's integration suite: the byte format and recovery (`format.rs`), the log on
//! the simulator and on a real disk (`wal.rs`), and the crash fuzzer (`crash_fuzz.rs`), which
//! `cargo xtask fuzz --fuzzer wal` runs on many seeds.

mod crash_fuzz;
mod format;
mod wal;
