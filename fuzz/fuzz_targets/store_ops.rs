//! `store_ops`: see `floyd_tests::fuzzcheck::store_ops` for the input layout and the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| floyd_tests::fuzzcheck::store_ops(data));
