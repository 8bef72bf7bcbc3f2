//! The block-paged KV pool of `docs/paged_kv.md`: `num_blocks` blocks of `block_size` token
//! slots, one free list, one block table per request. Slot `s` of a request lives in block
//! `table[s / block_size]`, row `s % block_size`; its flat slot index is
//! `block * block_size + row`. Blocks belong to exactly one request or to the free list.
use rustc_hash::FxHashMap;

use crate::error::{invalid, SchedulerError};

/// Block sizes the paged attention kernel supports (its tile loop needs a multiple of 8).
pub const BLOCK_SIZES: [u32; 4] = [8, 16, 32, 64];
/// The layout's default block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 16;

#[derive(Debug, Clone)]
pub struct BlockPool {
    block_size: u32,
    num_blocks: u32,
    /// A stack: the block freed last is reused first (it is the likeliest to be cache-warm).
    free: Vec<u32>,
    tables: FxHashMap<u64, Vec<u32>>,
}

impl BlockPool {
    /// A full pool. `num_blocks * block_size` must fit an int32 slot index.
    pub fn new(num_blocks: u32, block_size: u32) -> Result<Self, SchedulerError> {
        if !BLOCK_SIZES.contains(&block_size) {
            return Err(invalid("block_size", format!("must be one of {BLOCK_SIZES:?}, got {block_size}")));
        }
        if num_blocks == 0 {
            return Err(invalid("num_blocks", "must be at least 1"));
        }
        if u64::from(num_blocks) * u64::from(block_size) > i32::MAX as u64 {
            return Err(invalid(
                "num_blocks",
                format!("{num_blocks} blocks of {block_size} slots overflow int32 slot indices"),
            ));
        }
        // Reversed so that block 0 is handed out first.
        Ok(Self {
            block_size,
            num_blocks,
            free: (0..num_blocks).rev().collect(),
            tables: FxHashMap::default(),
        })
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn num_blocks(&self) -> u32 {
        self.num_blocks
    }

    pub fn num_free(&self) -> u32 {
        self.free.len() as u32
    }

    pub fn num_used(&self) -> u32 {
        self.num_blocks - self.num_free()
    }

    /// Blocks that hold `slots` token slots.
    pub fn blocks_for(&self, slots: u32) -> u32 {
        slots.div_ceil(self.block_size)
    }

    /// The request's block table (empty for a request holding no blocks).
    pub fn table(&self, request: u64) -> &[u32] {
        self.tables.get(&request).map_or(&[], Vec::as_slice)
    }

    /// Slots the request's blocks can hold.
    pub fn capacity(&self, request: u64) -> u32 {
        self.table(request).len() as u32 * self.block_size
    }

    /// Blocks the request must add so that it holds `slots` slots.
    pub fn blocks_needed(&self, request: u64, slots: u32) -> u32 {
        self.blocks_for(slots).saturating_sub(self.table(request).len() as u32)
    }

    /// Grows the request's table to hold `slots` slots, all or nothing.
    pub fn reserve(&mut self, request: u64, slots: u32) -> Result<(), SchedulerError> {
        let needed = self.blocks_needed(request, slots);
        if needed > self.num_free() {
            return Err(SchedulerError::OutOfBlocks { needed, free: self.num_free() });
        }
        if needed > 0 {
            let at = self.free.len() - needed as usize;
            let table = self.tables.entry(request).or_default();
            table.extend(self.free.drain(at..).rev());
        }
        Ok(())
    }

    /// Keeps the blocks that hold the first `slots` slots and frees the rest.
    pub fn truncate(&mut self, request: u64, slots: u32) {
        let keep = self.blocks_for(slots) as usize;
        if let Some(table) = self.tables.get_mut(&request) {
            if table.len() > keep {
                self.free.extend(table.drain(keep..).rev());
            }
            if table.is_empty() {
                self.tables.remove(&request);
            }
        }
    }

    /// Frees every block of the request; returns how many.
    pub fn release(&mut self, request: u64) -> u32 {
        match self.tables.remove(&request) {
            Some(table) => {
                let n = table.len() as u32;
                self.free.extend(table.into_iter().rev());
                n
            }
            None => 0,
        }
    }

    /// Flat slot index of the request's slot `slot`, when its blocks hold it.
    pub fn slot(&self, request: u64, slot: u32) -> Option<i32> {
        let block = *self.table(request).get((slot / self.block_size) as usize)?;
        // In range: `new` checked num_blocks * block_size <= i32::MAX.
        Some((block * self.block_size + slot % self.block_size) as i32)
    }

    /// Appends the flat slot indices of slots `start..start + count` to `out`.
    pub fn write_slot_mapping(
        &self,
        request: u64,
        start: u32,
        count: u32,
        out: &mut Vec<i32>,
    ) -> Result<(), SchedulerError> {
        let end = start.checked_add(count).ok_or_else(|| invalid("count", "slot range overflows"))?;
        if end > self.capacity(request) {
            return Err(invalid(
                "count",
                format!(
                    "slots {start}..{end} of request {request} exceed its {} reserved slots",
                    self.capacity(request)
                ),
            ));
        }
        let table = self.table(request);
        let bs = self.block_size;
        out.extend((start..end).map(|s| (table[(s / bs) as usize] * bs + s % bs) as i32));
        Ok(())
    }

    /// Requests holding blocks.
    pub fn requests(&self) -> impl Iterator<Item = u64> + '_ {
        self.tables.keys().copied()
    }

    /// Checks that every block is either free or in exactly one table.
    pub fn check_integrity(&self) -> Result<(), String> {
        let mut seen = vec![false; self.num_blocks as usize];
        let all = self.free.iter().chain(self.tables.values().flatten());
        for &block in all {
            let entry = seen.get_mut(block as usize).ok_or(format!("block {block} out of range"))?;
            if *entry {
                return Err(format!("block {block} is owned twice"));
            }
            *entry = true;
        }
        match seen.iter().position(|s| !s) {
            Some(lost) => Err(format!("block {lost} is neither free nor owned (leaked)")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_documented_layout() {
        let mut pool = BlockPool::new(4, 8).unwrap();
        pool.reserve(7, 3).unwrap();
        pool.reserve(9, 10).unwrap();
        pool.reserve(7, 12).unwrap();
        assert_eq!(pool.table(7), &[0, 3]);
        assert_eq!(pool.table(9), &[1, 2]);
        let mut out = Vec::new();
        pool.write_slot_mapping(7, 6, 4, &mut out).unwrap();
        assert_eq!(out, vec![6, 7, 24, 25]);
        assert_eq!(pool.slot(9, 9), Some(17));
        assert_eq!(pool.slot(9, 16), None);
        assert!(pool.write_slot_mapping(9, 10, 7, &mut out).is_err());
    }

    #[test]
    fn reserve_is_all_or_nothing_and_release_refills() {
        let mut pool = BlockPool::new(3, 16).unwrap();
        pool.reserve(1, 17).unwrap();
        assert_eq!(pool.reserve(2, 33), Err(SchedulerError::OutOfBlocks { needed: 3, free: 1 }));
        assert_eq!(pool.num_free(), 1);
        assert!(pool.table(2).is_empty());
        pool.truncate(1, 16);
        assert_eq!(pool.num_free(), 2);
        pool.truncate(1, 0);
        assert_eq!(pool.num_free(), 3);
        assert_eq!(pool.release(1), 0);
        pool.check_integrity().unwrap();
    }

    #[test]
    fn rejects_bad_geometry() {
        assert!(BlockPool::new(4, 12).is_err());
        assert!(BlockPool::new(0, 16).is_err());
        assert!(BlockPool::new(u32::MAX, 64).is_err());
    }
}
