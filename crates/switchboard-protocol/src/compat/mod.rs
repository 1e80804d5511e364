//! The wire formats of other signaling servers that Switchboard also speaks,
//! so that their unmodified clients work against it. Each module is that
//! protocol's messages as typed enums, shared by the server's dialect and by
//! tests, the way matchbox shares `PeerEvent` / `PeerRequest` between its
//! server and its socket.

pub mod matchbox;
pub mod peerjs;
pub mod y_webrtc;
