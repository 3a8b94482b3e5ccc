//! The log's bytes on disk, and recovery's reading of them.
//!
//! The log is a sequence of groups, one per group commit (one write and one `fdatasync`).
//! Each group starts on a fresh [`BLOCK`] (4 KiB) boundary and is padded with zeros to the
//! next one, so a write never touches a block that holds an acknowledged record: a torn
//! write can only damage the group being written, which nobody was told is durable.
//!
//! ```text
//! group  = header (24 bytes) record* zero padding to a 4 KiB boundary
//! header = magic u32 | crc u32 | first_lsn u64 | count u32 | bytes u32    (little-endian)
//! record = len u32 | crc u32 | payload (len bytes, len > 0)
//! ```
//!
//! The header's `crc` covers its other fields; a record's `crc` covers its log sequence
//! number (`first_lsn` + its index in the group, never stored), its length and its payload,
//! so a stale record of an older log at the same place cannot pass for a new one. `bytes` is
//! the group's length before the padding. Recovery reads groups from offset 0 while each is
//! whole: the magic, both kinds of checksum, `first_lsn` following the previous group, every
//! record inside `bytes`. At the first group that is not, the log ends, at that group's
//! start: a group is recovered entirely or not at all, so no torn record is ever returned,
//! and a record of a group that failed its check was never acknowledged (its `fdatasync`
//! did not complete, or the whole group would be intact).

use dispatch_loop::AlignedBuf;

use crate::crc32c::Crc32c;

/// The unit of the log's writes and the alignment of its direct I/O.
pub const BLOCK: usize = 4096;
/// A group header's size.
pub const GROUP_HEADER: usize = 24;
/// A record header's size.
pub const RECORD_HEADER: usize = 8;
/// "WALG".
const MAGIC: u32 = 0x4757_4c41;

/// A record's checksum: its sequence number, length and payload.
fn record_crc(lsn: u64, payload: &[u8]) -> u32 {
    let len = payload.len() as u32;
    Crc32c::new()
        .update(&lsn.to_le_bytes())
        .update(&len.to_le_bytes())
        .update(payload)
        .value()
}

/// A group header's checksum: the fields after it.
fn header_crc(first_lsn: u64, count: u32, bytes: u32) -> u32 {
    Crc32c::new()
        .update(&MAGIC.to_le_bytes())
        .update(&first_lsn.to_le_bytes())
        .update(&count.to_le_bytes())
        .update(&bytes.to_le_bytes())
        .value()
}

/// Starts a group in the empty `buf`: room for the header.
pub(crate) fn begin_group(buf: &mut AlignedBuf) {
    assert!(buf.is_empty(), "a group starts in an empty buffer");
    buf.resize(GROUP_HEADER, 0);
}

/// Appends record `lsn` to the group in `buf`.
pub(crate) fn push_record(buf: &mut AlignedBuf, lsn: u64, payload: &[u8]) {
    assert!(!payload.is_empty(), "records are not empty");
    let len = u32::try_from(payload.len()).expect("a record's length fits 32 bits");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_crc(lsn, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Writes the header of the group in `buf` (its records numbered from `first_lsn`) and pads
/// it to a whole number of blocks.
pub(crate) fn finish_group(buf: &mut AlignedBuf, first_lsn: u64, count: u32) {
    assert!(count > 0 && buf.len() > GROUP_HEADER);
    let bytes = u32::try_from(buf.len()).expect("a group's length fits 32 bits");
    let mut header = [0; GROUP_HEADER];
    header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&header_crc(first_lsn, count, bytes).to_le_bytes());
    header[8..16].copy_from_slice(&first_lsn.to_le_bytes());
    header[16..20].copy_from_slice(&count.to_le_bytes());
    header[20..24].copy_from_slice(&bytes.to_le_bytes());
    buf[..GROUP_HEADER].copy_from_slice(&header);
    buf.resize(buf.len().next_multiple_of(BLOCK), 0);
}

/// The bytes of one group holding `records`, numbered from `first_lsn`, padding included:
/// what the log writes (for tests and tools; the log itself fills its own buffers).
///
/// # Panics
/// If `records` is empty or holds an empty record.
pub fn encode_group(first_lsn: u64, records: &[&[u8]]) -> Vec<u8> {
    let size = group_size(records.iter().map(|record| record.len()));
    let mut buf = AlignedBuf::new(size, BLOCK).expect("a valid layout");
    begin_group(&mut buf);
    for (index, record) in records.iter().enumerate() {
        push_record(&mut buf, first_lsn + index as u64, record);
    }
    finish_group(&mut buf, first_lsn, records.len() as u32);
    buf.to_vec()
}

/// The bytes a group of records of these lengths takes, padding included.
pub fn group_size(lengths: impl IntoIterator<Item = usize>) -> usize {
    let records: usize = lengths.into_iter().map(|len| RECORD_HEADER + len).sum();
    (GROUP_HEADER + records).next_multiple_of(BLOCK)
}

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The records, the first numbered 1.
    pub records: Vec<Vec<u8>>,
    /// Where the log ends (a multiple of [`BLOCK`]): the next group goes here, and
    /// everything from here on is garbage to cut off.
    pub end: u64,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the log in `image` (a file's bytes from offset 0) up to its first group that is
/// not whole (see the module's docs).
pub fn parse(image: &[u8]) -> Parsed {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((group, bytes)) = parse_group(&image[at..], records.len() as u64 + 1) {
        records.extend(group);
        at += bytes.next_multiple_of(BLOCK);
        if at > image.len() {
            // The padding is missing (a torn or short file): the group is whole, the next
            // one starts at the boundary all the same.
            break;
        }
    }
    Parsed {
        records,
        end: at as u64,
    }
}

/// The records of the group at the start of `image` if it is whole and numbered from
/// `first_lsn`, and its length before padding.
fn parse_group(image: &[u8], first_lsn: u64) -> Option<(Vec<Vec<u8>>, usize)> {
    if image.len() < GROUP_HEADER || u32_at(image, 0) != MAGIC {
        return None;
    }
    let (count, bytes) = (u32_at(image, 16), u32_at(image, 20));
    let header_ok = u32_at(image, 4) == header_crc(u64_at(image, 8), count, bytes);
    let bytes = bytes as usize;
    if !header_ok || u64_at(image, 8) != first_lsn || bytes > image.len() || count == 0 {
        return None;
    }
    let mut records = Vec::with_capacity(count as usize);
    let mut at = GROUP_HEADER;
    for index in 0..u64::from(count) {
        if at + RECORD_HEADER > bytes {
            return None;
        }
        let len = u32_at(image, at) as usize;
        let payload = image.get(at + RECORD_HEADER..at + RECORD_HEADER + len)?;
        let in_group = at + RECORD_HEADER + len <= bytes;
        if len == 0 || !in_group || u32_at(image, at + 4) != record_crc(first_lsn + index, payload)
        {
            return None;
        }
        records.push(payload.to_vec());
        at += RECORD_HEADER + len;
    }
    (at == bytes).then_some((records, bytes))
}
