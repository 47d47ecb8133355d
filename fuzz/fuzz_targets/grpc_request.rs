//! Arbitrary bytes decoded as each gRPC request message, checked as the server checks
//! them, and any image the check accepts hashed. See `lookalike_fuzz::grpc_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lookalike_fuzz::grpc_request(data);
});
