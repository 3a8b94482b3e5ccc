//! `Table<T>`: a fixed-capacity table of connections (or anything) addressed by
//! generation-checked handles, allocated once: a handle to a closed entry never reaches
//! the entry that reuses its place.

/// A handle to one entry of a [`Table`]: its place and the generation of the entry that was
/// there when the handle was made. Fits a `dispatch_loop::Tag` ([`ConnId::to_tag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    idx: u32,
    generation: u32,
}

impl ConnId {
    /// The id as a tag for the loop's operations: generation above, place below.
    pub fn to_tag(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.idx)
    }

    /// The id a tag made by [`ConnId::to_tag`] carries.
    pub fn from_tag(tag: u64) -> ConnId {
        ConnId {
            idx: tag as u32,
            generation: (tag >> 32) as u32,
        }
    }

    /// The entry's place in its table (stable while the entry lives).
    pub fn index(self) -> u32 {
        self.idx
    }
}

/// Shows the length and capacity, not the entries (`T` need not be `Debug`).
impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

struct Entry<T> {
    generation: u32,
    value: Option<T>,
    next_free: u32,
}

const NONE: u32 = u32::MAX;

/// A fixed-capacity table. `insert` fails (handing the value back) when it is full; nothing
/// allocates after [`Table::with_capacity`]. Memory follows the load: the entries are
/// reserved at full capacity (address space the kernel backs only once written) and an
/// entry is first written when a place is first needed, so a table sized for 10,000
/// connections that holds 100 touches about 100 entries.
pub struct Table<T> {
    /// The places ever used; at most `capacity`, never reallocated.
    entries: Vec<Entry<T>>,
    capacity: u32,
    free_head: u32,
    len: u32,
}

impl<T> Table<T> {
    /// A table for at most `capacity` entries (at least 1, below 2^32 - 1).
    pub fn with_capacity(capacity: u32) -> Table<T> {
        assert!(
            capacity > 0 && capacity < NONE,
            "a table holds 1 to 2^32 - 2 entries"
        );
        Table {
            entries: Vec::with_capacity(capacity as usize),
            capacity,
            // Empty: places come from the untouched end until one is removed.
            free_head: NONE,
            len: 0,
        }
    }

    /// Entries in use.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether no entry is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most entries the table holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Stores `value`, or hands it back when the table is full.
    pub fn insert(&mut self, value: T) -> Result<ConnId, T> {
        let idx = if self.free_head == NONE {
            if self.len == self.capacity {
                return Err(value);
            }
            // A place never used: every used one is in use (the free list is empty), and
            // the push stays within the reserved capacity.
            assert_eq!(self.entries.len() as u32, self.len);
            self.entries.push(Entry {
                generation: 0,
                value: None,
                next_free: NONE,
            });
            self.len
        } else {
            self.free_head
        };
        let entry = &mut self.entries[idx as usize];
        assert!(entry.value.is_none(), "a free entry holds no value");
        if idx == self.free_head {
            self.free_head = std::mem::replace(&mut entry.next_free, NONE);
        }
        entry.value = Some(value);
        self.len += 1;
        Ok(ConnId {
            idx,
            generation: entry.generation,
        })
    }

    /// The entry `id` names, if it is still that entry.
    pub fn get(&self, id: ConnId) -> Option<&T> {
        let entry = self.entries.get(id.idx as usize)?;
        if entry.generation != id.generation {
            return None;
        }
        entry.value.as_ref()
    }

    /// The entry `id` names, if it is still that entry.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        let entry = self.entries.get_mut(id.idx as usize)?;
        if entry.generation != id.generation {
            return None;
        }
        entry.value.as_mut()
    }

    /// Takes the entry `id` names out; its place is reused with a new generation, so `id`
    /// and its copies go stale.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let entry = self.entries.get_mut(id.idx as usize)?;
        if entry.generation != id.generation {
            return None;
        }
        let value = entry.value.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        entry.next_free = self.free_head;
        self.free_head = id.idx;
        self.len -= 1;
        Some(value)
    }

    /// The ids of every entry in use (for a shutdown that closes them all).
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.value.is_some())
            .map(|(idx, entry)| ConnId {
                idx: idx as u32,
                generation: entry.generation,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_handles_miss_reused_places() {
        let mut table = Table::with_capacity(2);
        let a = table.insert("a").unwrap();
        let b = table.insert("b").unwrap();
        assert_eq!(table.insert("c"), Err("c"), "full");
        assert_eq!(table.remove(a), Some("a"));
        let c = table.insert("c").unwrap();
        assert_eq!(c.index(), a.index(), "the place is reused");
        assert_eq!(table.get(a), None, "the old handle is stale");
        assert_eq!(table.remove(a), None);
        assert_eq!(table.get(c), Some(&"c"));
        assert_eq!(ConnId::from_tag(b.to_tag()), b);
        assert_eq!(table.ids().count(), 2);
    }
}
