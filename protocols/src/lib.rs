//! gyre-protocols.
