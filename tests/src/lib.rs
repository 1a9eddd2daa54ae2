//! Helpers shared by the integration tests in `tests/tests/`.
pub mod fuzzcheck;
pub mod sim;
