//! Arbitrary bytes as an in-memory project of role files (see
//! `src/check.rs` for the format): loading and validating never panics, and
//! every rejection is a clear diagnostic.

#![no_main]

use imagectl_fuzz::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: check::write_seeds_from_env(),
    |data: &[u8]| check::check(data)
);
