//! Access tokens: the strict EdDSA signer and verifier live in `outband-jwt`
//! (`cloud/jwt`), shared with the gateway, which verifies the same tokens against this
//! manager's JWKS. Re-exported here so the manager's modules keep their paths.

pub use outband_jwt::*;
