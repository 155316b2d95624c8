//! A bounded window of recently seen event ids, for consumers: Graph redeliveries, spool
//! re-drains after a crash and replays all carry the same event id, so a consumer that remembers
//! the last N ids processes each event once as long as copies arrive within N events of each
//! other. Bounded so a long-running consumer's memory stays flat.

use std::collections::{HashSet, VecDeque};

#[derive(Debug)]
pub struct DedupeWindow {
    capacity: usize,
    seen: HashSet<String>,
    /// Insertion order, oldest first: the id to forget when the window is full.
    order: VecDeque<String>,
}

impl DedupeWindow {
    /// Remembers at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DedupeWindow {
            capacity,
            seen: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
        }
    }

    /// Records `id`; true when it was not in the window (process the event), false for a
    /// duplicate (skip it). A duplicate does not refresh its position: the window is by arrival.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_inside_the_window_are_dropped() {
        let mut w = DedupeWindow::new(3);
        assert!(w.first_time("a"));
        assert!(w.first_time("b"));
        assert!(!w.first_time("a"));
        assert!(!w.first_time("b"));
        assert!(w.first_time("c"));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn the_oldest_id_is_forgotten_when_full() {
        let mut w = DedupeWindow::new(2);
        assert!(w.first_time("a"));
        assert!(w.first_time("b"));
        assert!(w.first_time("c")); // forgets a
        assert!(!w.contains("a"));
        assert!(w.contains("b") && w.contains("c"));
        assert!(w.first_time("a")); // outside the window: seen again
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn a_duplicate_does_not_extend_its_life() {
        let mut w = DedupeWindow::new(2);
        w.first_time("a");
        w.first_time("b");
        assert!(!w.first_time("a"));
        w.first_time("c"); // a is still the oldest arrival
        assert!(!w.contains("a"));
    }

    #[test]
    fn zero_capacity_still_remembers_the_last_id() {
        let mut w = DedupeWindow::new(0);
        assert!(w.first_time("a"));
        assert!(!w.first_time("a"));
        assert!(w.first_time("b"));
        assert!(w.first_time("a"));
    }
}
