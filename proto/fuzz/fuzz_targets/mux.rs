//! A hostile peer's frames interleaved with local operations on a multiplexer. See
//! `outband_proto::fuzzing::mux` for the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    outband_proto::fuzzing::mux(data);
});
