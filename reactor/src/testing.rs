//! In-memory transports for tests (being written).
