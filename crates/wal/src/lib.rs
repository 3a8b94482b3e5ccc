//! A write-ahead log on the dispatch loop, the first brick of a storage engine: records
//! from many callers, appended in one loop turn, go to disk as one direct write and one
//! `fdatasync` (group commit), and each is acknowledged only once that `fdatasync`
//! completed. Recovery reads the log back and stops at the first group that is not whole
//! (checksums, CRC-32C). The byte format and why it never overwrites an acknowledged byte
//! are in [`format`](mod@format); the life of an append in `wal.rs` ([`Wal`]).
//!
//! It is crash-fuzzed on the simulator (`cargo xtask fuzz --fuzzer wal`,
//! `tests/it/crash_fuzz.rs`): over every seed, every acknowledged record survives every
//! crash, and no torn record is ever returned. [`bench`](mod@bench) runs it on a real file for the
//! storage benchmark (`cargo run --release -p dispatch-wal --bin wal-bench -- --help`).
//!
//! ```no_run
//! use dispatch_loop::{Io, Options};
//! use dispatch_wal::{Wal, WalHost, WalOptions};
//!
//! struct App {
//!     wal: Wal<App>,
//!     durable: u64,
//! }
//!
//! impl WalHost for App {
//!     fn wal(&mut self) -> &mut Wal<App> {
//!         &mut self.wal
//!     }
//! }
//!
//! let mut io: Io<App> = Io::new(&Options::new(64)).unwrap();
//! let wal = Wal::new(&WalOptions::new("/var/lib/app", "log")).unwrap();
//! let mut app = App { wal, durable: 0 };
//! app.wal.open(&mut io, |app, io, recovered| {
//!     let records = recovered.expect("the log opens");
//!     println!("{} records recovered", records.len());
//!     for caller in 0..8 {
//!         // Eight appends in one turn: one write, one fdatasync.
//!         let on_durable = |app: &mut App, _: &mut Io<App>, _caller, lsn: std::io::Result<u64>| {
//!             app.durable = app.durable.max(lsn.expect("durable"));
//!         };
//!         app.wal.append(io, caller, b"a record", on_durable).unwrap();
//!     }
//! })
//! .unwrap();
//! io.run_until_idle(&mut app).unwrap();
//! assert_eq!(app.durable, app.wal.next_lsn() - 1);
//! ```
#![forbid(unsafe_code)]

pub mod bench;
mod crc32c;
pub mod format;
mod wal;

pub use crate::crc32c::{crc32c, Crc32c};
pub use crate::wal::{AckCallback, AppendError, OpenCallback, Wal, WalHost, WalOptions, WalStats};
