//! End-to-end tests across the local and remote clusters live in `tests/tests/`.
