//! The one place where the interLink wire format and our annotation/label keys
//! are defined. Both the provider (local side) and the plugin (remote side)
//! import these types; no wire struct is defined twice.
//!
//! Field names follow the Go structs of interLink (`pkg/interlink/types.go`),
//! not its outdated OpenAPI document: casing is mixed on purpose, so every field
//! carries an explicit `rename`. Lists accept `null` as well as `[]` because Go
//! serialises nil slices as `null`.

pub mod keys;
pub mod types;

pub use types::*;
