//! Every parser of BMC datagrams on arbitrary bytes: no panic, and what the packet
//! parser accepts re-encodes to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    outband_ipmi::fuzzing::check_packet(data);
});
