//! BMC consoles (VNC, WebSocket serial). Work in progress.
