//! Under `cfg(loom)` only the informer's notification ring is compiled (the rest needs the
//! store), so loom can model it.

#[path = "ring.rs"]
pub mod ring;
