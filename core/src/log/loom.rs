//! Under `cfg(loom)` only the lock-free core of the log is compiled (frames, group commit and the
//! claim / publish protocol over heap-backed regions), so loom can model it.

#[path = "commit.rs"]
pub mod commit;
#[path = "frame.rs"]
pub mod frame;
#[path = "raw.rs"]
pub mod raw;
#[path = "watermark.rs"]
pub mod watermark;
