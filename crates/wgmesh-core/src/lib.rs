//! wgmesh-core: the parts of wgmesh that are pure data and logic.
//!
//! It owns WireGuard keys and their text form ([`key`]), the wg-quick file
//! model with its parser and renderer ([`wgquick`]), and the declarative mesh
//! planner that turns a mesh file into every node's configuration ([`plan`]).
//! It also owns what the coordination server and the agent say to each
//! other: network maps and access policy ([`netmap`]) and the control
//! API bodies ([`control`]).
//!
//! It does no IO: no files, sockets, clock or randomness. Callers read and
//! write files, and hand in random bytes (see [`key::PrivateKey::from_random`]).

pub mod control;
pub mod key;
pub mod netmap;
pub mod plan;
pub mod schema;
pub mod wgquick;
