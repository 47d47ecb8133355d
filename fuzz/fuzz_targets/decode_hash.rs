//! Arbitrary bytes → bounded decode → PDQ + pHash (and the thumbnail path).
//! See `lookalike_fuzz::decode_hash` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lookalike_fuzz::decode_hash(data);
});
