//! gyre-herd (not built yet).
