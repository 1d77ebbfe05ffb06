//! IPMI 2.0 over LAN (RMCP+). Work in progress.
