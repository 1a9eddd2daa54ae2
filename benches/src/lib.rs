//! Shared helpers for the criterion benches (ratio reporting).
