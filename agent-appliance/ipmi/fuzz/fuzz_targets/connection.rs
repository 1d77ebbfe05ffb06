//! The session state machine fed arbitrary datagrams (split on a marker byte) at
//! every step it reaches: no panic, and it always ends with a deadline or closed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    outband_ipmi::fuzzing::check_connection(data);
});
