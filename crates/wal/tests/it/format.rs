//! The log's byte format: CRC-32C's known answer, groups round-tripped, and recovery
//! stopping at the first group that is not whole, wherever the damage is.

use dispatch_wal::crc32c;
use dispatch_wal::format::{encode_group, group_size, parse, Parsed, BLOCK};

/// Recovery of `image`: the records and where the log ends.
/// Recovery of `image`: how many records, the last one's first bytes, and where the log
/// ends (short, so that a failed comparison prints a readable line).
fn check(image: &[u8]) -> (usize, Vec<u8>, u64) {
    let Parsed { records, end } = parse(image);
    let last = records
        .last()
        .map_or(Vec::new(), |r| r[..r.len().min(8)].to_vec());
    (records.len(), last, end)
}

/// Two groups: records 1..=2, then 3..=5 (the second spans two blocks).
fn two_groups() -> (Vec<u8>, usize) {
    let mut image = encode_group(1, &[b"one", b"two"]);
    let first = image.len();
    let big = vec![7; 5000];
    image.extend(encode_group(3, &[b"three", &big, b"five"]));
    (image, first)
}

#[test]
fn crc32c_known_answer() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(crc32c(b""), 0);
}

#[test]
fn groups_round_trip_and_are_whole_blocks() {
    let (image, first) = two_groups();
    assert_eq!(first, BLOCK);
    assert_eq!(image.len(), BLOCK + 2 * BLOCK);
    assert_eq!(group_size([5, 5000, 4]), 2 * BLOCK);
    let Parsed { records, end } = parse(&image);
    assert_eq!(records.len(), 5);
    assert!(records[3] == vec![7; 5000]);
    assert_eq!(end, image.len() as u64);
    assert_eq!(check(&[]), (0, Vec::new(), 0));
    assert_eq!(check(&[0; 8192]), (0, Vec::new(), 0));
}

#[test]
fn recovery_stops_at_the_first_damaged_group_whatever_the_damage() {
    let (image, first) = two_groups();
    let first_only = (2, b"two".to_vec(), first as u64);
    // A flipped byte anywhere in the second group's bytes (header, a record, its payload).
    let second_bytes = 24 + (8 + 5) + (8 + 5000) + (8 + 4);
    for at in (first..first + second_bytes).step_by(97) {
        let mut damaged = image.clone();
        damaged[at] ^= 0x10;
        assert_eq!(check(&damaged), first_only, "byte {at}");
    }
    // Torn: the second group cut at any sector before its end, or a sector lost (zeros).
    for cut in (first..first + second_bytes).step_by(512) {
        assert_eq!(check(&image[..cut]), first_only, "cut at {cut}");
    }
    let mut lost_sector = image.clone();
    lost_sector[first + BLOCK..first + BLOCK + 512].fill(0);
    assert_eq!(check(&lost_sector), first_only);
    // A whole group with the wrong sequence number (stale, from another log) is not taken.
    let mut stale = encode_group(1, &[b"one", b"two"]);
    stale.extend(encode_group(4, &[b"four"]));
    assert_eq!(check(&stale), first_only);
    // Garbage after the end changes nothing.
    let mut garbage = image.clone();
    garbage.extend([0xff; 4096]);
    assert_eq!(check(&garbage).0, 5);
    // Cut in its padding only, a group is whole: its records are all there.
    assert_eq!(check(&image[..first + second_bytes]).0, 5);
}
