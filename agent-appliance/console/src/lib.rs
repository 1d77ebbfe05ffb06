//! BMC consoles for the agent: the RFB (VNC) security handshake, VNC over TCP and
//! WebSocket, and WebSocket serial consoles.
pub mod fuzzing;
pub mod rfb;
