//! Generates the Rust types for the wire schema with protox (pure Rust), so no system
//! `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = "schema/outband/v1/tunnel.proto";
    println!("cargo:rerun-if-changed={schema}");
    let fds = protox::compile([schema], ["schema"])?;
    let mut config = prost_build::Config::new();
    // Payload bytes are `Bytes`, so a decoded data frame shares the read buffer.
    config.bytes(["."]);
    config.compile_fds(fds)?;
    Ok(())
}
