//! Arbitrary bytes in arbitrary splits into the frame decoder. See
//! `outband_proto::fuzzing::frame_decoder` for the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    outband_proto::fuzzing::frame_decoder(data);
});
