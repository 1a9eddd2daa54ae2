//! The store: the embedded API server over the event log.

pub mod object;
pub mod selector;
pub mod validate;
