//! Generates the Rust types for the wire schema with protox (pure Rust), so no system
//! `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = "schema/outband/v1/tunnel.proto";
    println!("cargo:rerun-if-changed={schema}");
    let fds = protox::compile([schema], ["schema"])?;
    let mut config = prost_build::Config::new();
    // Payload bytes are `Bytes`, cheap to split into chunks and hand between tasks.
    // (The decoder copies payloads out of its read buffer on purpose: see codec.rs.)
    config.bytes(["."]);
    // Credentials get a hand-written Debug that hides the password (src/lib.rs).
    // So does the hello, for the agent's join token.
    config.skip_debug(["outband.v1.BmcAuth", "outband.v1.Hello"]);
    // Boxed so that `Frame` (queued per connection) stays as small as it was before
    // credentials travelled: an inline `BmcAuth` made every queued frame 64 bytes
    // bigger, about 2 KiB per idle agent connection at the gateway.
    config.boxed(".outband.v1.StreamOpen.auth");
    config.boxed(".outband.v1.PowerRequest.auth");
    config.boxed(".outband.v1.BmcInfoRequest.auth");
    config.boxed(".outband.v1.BootDeviceRequest.auth");
    config.boxed(".outband.v1.Reply.body.bmc_info");
    config.compile_fds(fds)?;
    Ok(())
}
