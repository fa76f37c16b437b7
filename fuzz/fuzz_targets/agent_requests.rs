//! Every Agent request type (the first byte picks it) decoded from bytes with prost and put
//! through the validation its handler runs first (`preflight_agent::fuzzing`). Property: no
//! panic; a refusal is INVALID_ARGUMENT (or RESOURCE_EXHAUSTED / FAILED_PRECONDITION for
//! benchmark sizes and targets), never INTERNAL or UNKNOWN.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tonic::Code;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    if let Err(s) = preflight_agent::fuzzing::validate_request(kind, bytes) {
        assert!(
            matches!(
                s.code(),
                Code::InvalidArgument | Code::ResourceExhausted | Code::FailedPrecondition
            ),
            "{}: bad input answered {:?}: {}",
            preflight_agent::fuzzing::REQUEST_TYPES
                [usize::from(kind) % preflight_agent::fuzzing::REQUEST_TYPES.len()],
            s.code(),
            s.message()
        );
        assert!(!s.message().is_empty());
    }
});
