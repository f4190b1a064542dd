//! wgmesh-server: the coordination server (`wgmesh server`).
//!
//! It owns the record of a mesh: networks, nodes, setup keys, admin
//! tokens, relays (and their tokens), access policy, address allocation
//! and the audit log, in SQLite or PostgreSQL ([`db`], [`migrations`]);
//! the in-memory world built from that record and the network maps
//! computed from it ([`world`]); every change, each audited in its own
//! transaction ([`service`]); the REST API with its OpenAPI document, map
//! streams and metrics ([`api`]); and a STUN responder ([`stun_server`]).
//!
//! It does not move packets (that is the agents' engine and the relay),
//! and it never sees a private key: agents send public keys only.

pub mod api;
pub mod clock;
pub mod db;
pub mod lock;
pub mod metrics;
pub mod migrations;
pub mod secrets;
pub mod serve;
pub mod service;
pub mod stun_server;
pub mod validate;
pub mod world;

pub use api::app;
