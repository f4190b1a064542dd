//! Lab topologies described in TOML (and built in code through [`Lab`]).
