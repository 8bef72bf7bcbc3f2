//! Whole-tree consistency check (tests, and after every mutation with `debug-checks`).

use super::{SuffixTree, NIL, ROOT};

impl SuffixTree {
    pub(super) fn integrity(&self) -> Result<(), String> {
        let free = self.check_free_list()?;
        self.check_structure(&free)?;
        self.check_slots()?;
        self.check_counts()?;
        self.check_cursors()
    }

    fn check_free_list(&self) -> Result<Vec<bool>, String> {
        let mut free = vec![false; self.nodes.len()];
        let mut next = self.free_head;
        while next != NIL {
            let id = next as usize;
            if id == 0 || id >= free.len() || free[id] {
                return Err(format!("free list broken at node {id}"));
            }
            free[id] = true;
            if self.nodes[id].count != 0 {
                return Err(format!("free node {id} has a count"));
            }
            next = self.nodes[id].parent;
        }
        let free_count = free.iter().filter(|&&f| f).count();
        if free_count + self.live_nodes != self.nodes.len() {
            return Err(format!(
                "{free_count} free + {} live != {} nodes",
                self.live_nodes,
                self.nodes.len()
            ));
        }
        Ok(free)
    }

    fn check_structure(&self, free: &[bool]) -> Result<(), String> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![ROOT];
        let mut visited = 0usize;
        let mut mapped = 0usize;
        while let Some(node) = stack.pop() {
            visited += 1;
            let n = self.node(node);
            let mut child_sum = 0u64;
            let mut children = 0usize;
            let mut best = NIL;
            let mut newest = NIL;
            let mut prev = NIL;
            for child in self.children_of(node) {
                let id = child as usize;
                if free[id] || seen[id] || children > self.nodes.len() {
                    return Err(format!("node {child} reached twice or free"));
                }
                seen[id] = true;
                let c = self.node(child);
                if c.parent != node || c.prev_sib != prev {
                    return Err(format!("node {child}: parent/sibling links wrong"));
                }
                if c.depth <= n.depth || c.depth > self.max_depth || c.count == 0 {
                    return Err(format!("node {child}: depth {} under {} or count 0", c.depth, n.depth));
                }
                if u64::from(c.recent) + u64::from(c.depth) > u64::from(self.clock) {
                    return Err(format!(
                        "node {child}: stamp {} + depth {} after the clock",
                        c.recent, c.depth
                    ));
                }
                self.check_label(node, child)?;
                if self.child(node, c.token) != child {
                    return Err(format!("node {child}: not found under its parent"));
                }
                let branching = self.is_branching(node);
                if self.children.get(&(node, c.token)).copied() != branching.then_some(child) {
                    return Err(format!(
                        "node {child}: child map entry wrong (branching parent: {branching})"
                    ));
                }
                mapped += usize::from(branching);
                if best == NIL || self.ranks_before(child, best) {
                    best = child;
                }
                if newest == NIL || self.is_newer(child, newest) {
                    newest = child;
                }
                child_sum += u64::from(c.count);
                children += 1;
                prev = child;
                stack.push(child);
            }
            if node == ROOT {
                if u64::from(n.count) != child_sum || n.count as usize != self.live_tokens {
                    return Err(format!("root count {} vs children {child_sum}", n.count));
                }
                continue;
            }
            if child_sum > u64::from(n.count) {
                return Err(format!("node {node}: children count {child_sum} > {}", n.count));
            }
            if children == 1 && child_sum == u64::from(n.count) {
                return Err(format!("node {node}: redundant (one child, same count)"));
            }
            if n.best_child != best {
                return Err(format!("node {node}: best child {} should be {best}", n.best_child));
            }
            if n.newest_child != newest {
                return Err(format!("node {node}: newest child {} should be {newest}", n.newest_child));
            }
        }
        if visited != self.live_nodes || self.children.len() != mapped {
            return Err(format!(
                "{visited} reachable, {} live, {} child links",
                self.live_nodes,
                self.children.len()
            ));
        }
        Ok(())
    }

    /// The label of `child` must hold its parent's string followed by the edge.
    fn check_label(&self, parent: u32, child: u32) -> Result<(), String> {
        let c = self.node(child);
        let slot = self.slots.get(c.label_slot as usize).ok_or(format!("node {child}: bad label slot"))?;
        if (slot.tokens.len() as u64) < u64::from(c.label_end) || c.label_end < c.depth || slot.refs == 0 {
            return Err(format!("node {child}: label out of range"));
        }
        let own = &slot.tokens[(c.label_end - c.depth) as usize..c.label_end as usize];
        let p = self.node(parent);
        if own[p.depth as usize] != c.token {
            return Err(format!("node {child}: first edge token mismatch"));
        }
        if parent != ROOT {
            let theirs = &self.tokens(p.label_slot)[(p.label_end - p.depth) as usize..p.label_end as usize];
            if own[..p.depth as usize] != *theirs {
                return Err(format!("node {child}: label disagrees with parent {parent}"));
            }
        }
        Ok(())
    }

    fn check_slots(&self) -> Result<(), String> {
        let mut refs = vec![0u32; self.slots.len()];
        let mut next = vec![ROOT];
        while let Some(node) = next.pop() {
            for child in self.children_of(node) {
                refs[self.node(child).label_slot as usize] += 1;
                next.push(child);
            }
        }
        let (mut live, mut zombie) = (0usize, 0usize);
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.refs != refs[index] {
                return Err(format!("slot {index}: {} refs recorded, {} real", slot.refs, refs[index]));
            }
            if slot.live {
                live += slot.tokens.len();
                if self.seq_slots.get(&slot.id) != Some(&(index as u32)) {
                    return Err(format!("slot {index}: not indexed"));
                }
            } else if slot.refs > 0 {
                zombie += slot.tokens.len();
            } else if !self.free_slots.contains(&(index as u32)) {
                return Err(format!("slot {index}: leaked"));
            }
        }
        if live != self.live_tokens || zombie != self.zombie_tokens || self.seq_slots.len() > self.slots.len()
        {
            return Err(format!(
                "token totals {live}/{zombie} vs {}/{}",
                self.live_tokens, self.zombie_tokens
            ));
        }
        Ok(())
    }

    /// Recounts every node from the live sequences.
    fn check_counts(&self) -> Result<(), String> {
        let mut counts = vec![0u64; self.nodes.len()];
        for &slot in self.seq_slots.values() {
            let tokens = self.tokens(slot);
            for start in 0..tokens.len() {
                let suffix = &tokens[start..(start + self.max_depth as usize).min(tokens.len())];
                let pos = self.locate(suffix).ok_or(format!("slot {slot}: suffix at {start} missing"))?;
                if self.node(pos.node).depth != pos.depth {
                    return Err(format!("slot {slot}: suffix at {start} ends inside an edge"));
                }
                let mut node = pos.node;
                while node != ROOT {
                    counts[node as usize] += 1;
                    node = self.node(node).parent;
                }
            }
        }
        let mut stack = vec![ROOT];
        while let Some(node) = stack.pop() {
            for child in self.children_of(node) {
                if counts[child as usize] != u64::from(self.node(child).count) {
                    return Err(format!(
                        "node {child}: count {} but {} occurrences",
                        self.node(child).count,
                        counts[child as usize]
                    ));
                }
                stack.push(child);
            }
        }
        Ok(())
    }

    fn check_cursors(&self) -> Result<(), String> {
        for &slot in self.seq_slots.values() {
            let s = &self.slots[slot as usize];
            let len = s.tokens.len();
            let count = s.cursors.len();
            if count == 0 {
                // Dropped by shrink_seq (or none needed): rebuilt on the next append.
                continue;
            }
            if count != self.cursor_count(len) {
                return Err(format!("slot {slot}: {count} cursors for {len} tokens"));
            }
            for (i, &cursor) in s.cursors.iter().enumerate() {
                let k = count - i;
                if cursor as usize >= self.nodes.len() {
                    return Err(format!("slot {slot}: cursor of length {k} dangling"));
                }
                let expected = self.locate(&s.tokens[len - k..]);
                if expected.map(|p| (p.node, p.depth)) != Some((cursor, self.node(cursor).depth))
                    || self.node(cursor).depth as usize != k
                {
                    return Err(format!("slot {slot}: cursor of length {k} misplaced"));
                }
            }
        }
        Ok(())
    }
}
