//! Switchboard: a WebRTC signaling and real-time messaging server.
//!
//! # Layout
//!
//! The crate follows the path of a frame through the server:
//!
//! * [`settings`]: every option, from flags, `SWITCHBOARD_*` variables and TOML.
//! * [`server`]: binds the listener, serves the router, runs the staged shutdown.
//! * [`endpoints`]: one module per endpoint (`/ws`, `/ws/echo`, `/ws/broadcast`,
//!   `/sse`, health and metrics) and the router that mounts them.
//! * [`websocket`]: the upgrade handshake, frames, and a socket that holds no
//!   buffer while idle.
//! * [`connection`]: the one task that drives each WebSocket: reads frames into
//!   an endpoint's [`connection::Handler`], writes its [`outbox::Outbox`],
//!   pings, and closes with the right code.
//! * [`outbox`]: each connection's bounded send queue; the boundary between
//!   whoever produces a frame and the task that writes it.
//! * [`hub`]: signaling rooms and peers: join, leave, relay, broadcast, observers.
//! * [`cluster`]: scale-out: rooms shared by several nodes over Redis (keys,
//!   Lua scripts, the node-to-node wire format, heartbeats and recovery).
//! * [`channels`]: the plain fan-out groups of `/ws/broadcast`.
//! * [`peer_id`]: unguessable, URL-safe peer ids.
//! * [`ice`]: the STUN/TURN servers peers are given, with TURN REST credentials.
//! * [`admission`], [`auth`]: who may connect (origin, connection caps, client
//!   IP behind proxies) and who they are (JWT verification, room patterns).
//! * [`rate_limit`]: per-connection message and byte rates.
//! * [`resume`]: sessions that survive a dropped connection for a grace period.
//! * [`tls`]: HTTPS/WSS with rustls; certificate reload on SIGHUP or file change.
//! * [`lifecycle`], [`app`]: readiness, shutdown tokens, and the shared state.
//! * [`telemetry`]: `tracing` setup and Prometheus metrics.
//!
//! The wire format itself lives in the `switchboard-protocol` crate, shared with
//! the Rust client. `ARCHITECTURE.md` at the repository root draws the whole map.

pub mod admission;
pub mod app;
pub mod auth;
pub mod broker;
pub mod channels;
pub mod cluster;
pub mod connection;
pub mod endpoints;
pub mod hub;
pub mod ice;
pub mod lifecycle;
pub mod outbox;
pub mod peer_id;
pub mod rate_limit;
pub mod resume;
pub mod server;
pub mod settings;
pub mod sweep;
pub mod telemetry;
pub mod tls;
pub mod webhooks;
pub mod websocket;

pub use server::{serve, shutdown_signal};
pub use settings::Settings;
