//! `log_recovery`: see `floyd_tests::fuzzcheck::log_recovery` for the input layout and the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| floyd_tests::fuzzcheck::log_recovery(data));
