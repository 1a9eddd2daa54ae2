//! [`StaticCache`]: process-wide values made once per piece of `&'static` data and found
//! again by its address — the Python strings for serde's field names (`topy`, `frompy`).
//!
//! A lookup is a hash of the address and one or two atomic loads: no lock, because every
//! conversion of an object looks up a dozen names and an uncontended mutex alone cost more
//! than the rest of a lookup. The table is fixed-size and never evicts; when it is full,
//! lookups of new keys return `None` and callers make the value each time instead (correct,
//! only slower). The keys are the field-name lists and names of the crate's types, a few
//! dozen at most.

use std::sync::OnceLock;

/// The identity of a `&'static` slice or `str`: its address and length (a literal may
/// share its bytes with a longer one, so the address alone is not enough).
pub type StaticId = (usize, usize);

/// The identity of `s`.
pub fn static_id<T: ?Sized>(s: &'static T) -> StaticId {
    (
        std::ptr::from_ref(s).cast::<u8>() as usize,
        std::mem::size_of_val(s),
    )
}

/// An open-addressing table of `N` write-once slots (`N` a power of two).
pub struct StaticCache<T, const N: usize> {
    slots: [OnceLock<(StaticId, T)>; N],
}

impl<T, const N: usize> StaticCache<T, N> {
    pub const fn new() -> Self {
        assert!(N.is_power_of_two());
        StaticCache {
            slots: [const { OnceLock::new() }; N],
        }
    }

    /// The value for `id`, made by `make` and stored if it has none yet; `None` when the
    /// table is full. `make` runs outside any lock (it may create Python objects, and with
    /// them run the garbage collector and finalizers that convert objects too); should two
    /// threads race for a slot, one value is kept and the other dropped.
    #[inline]
    pub fn get_or_make(&self, id: StaticId, make: impl FnOnce() -> T) -> Option<&T> {
        // Addresses of `&'static` data are at least 8 apart for distinct keys of one kind.
        let start = (id.0 >> 3) ^ (id.0 >> 10) ^ id.1;
        if let Some((k, v)) = self.slots[start & (N - 1)].get()
            && *k == id
        {
            return Some(v);
        }
        self.probe(start, id, make)
    }

    #[cold]
    fn probe(&self, start: usize, id: StaticId, make: impl FnOnce() -> T) -> Option<&T> {
        let mut make = Some(make);
        let mut made: Option<T> = None;
        for i in 0..N {
            let slot = &self.slots[start.wrapping_add(i) & (N - 1)];
            loop {
                if let Some((k, v)) = slot.get() {
                    if *k == id {
                        return Some(v);
                    }
                    break;
                }
                let value = match (made.take(), make.take()) {
                    (Some(v), _) => v,
                    (None, Some(f)) => f(),
                    // Unreachable: `make` is only taken to fill `made`.
                    (None, None) => return None,
                };
                // Taken meanwhile: look at the slot again (it may hold `id` now).
                if let Err((_, v)) = slot.set((id, value)) {
                    made = Some(v);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_stored_and_reports_full() {
        static NAMES: [&str; 5] = ["kind", "metadata", "spec", "status", "kin"];
        let cache: StaticCache<usize, 4> = StaticCache::new();
        let mut made = 0;
        for round in 0..2 {
            for (i, name) in NAMES.iter().take(4).enumerate() {
                let got = cache.get_or_make(static_id(*name), || {
                    made += 1;
                    i
                });
                assert_eq!(got, Some(&i), "round {round}");
            }
        }
        assert_eq!(made, 4, "each value is made once");
        assert_eq!(cache.get_or_make(static_id(NAMES[4]), || 9), None);
        // A prefix sharing the address is another key.
        let kind: &'static str = NAMES[0];
        assert_ne!(static_id(kind), static_id(&kind[..3]));
    }
}
