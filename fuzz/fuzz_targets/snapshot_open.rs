//! `snapshot_open`: see `floyd_tests::fuzzcheck::snapshot_open` for the input layout and the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| floyd_tests::fuzzcheck::snapshot_open(data));
