//! JSON schemas for the types that serialize by hand (ids, hashes), for the
//! daemon's OpenAPI document. The derived types get theirs from
//! `utoipa::ToSchema`; these say what the hand-written `Serialize` writes.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::ids::validate_id;
use crate::limits::ID_BYTES_MAX;

/// An id: 1 to `ID_BYTES_MAX` bytes of `[A-Za-z0-9._-]`, not only dots
/// (`ids::validate_id`, which the pattern mirrors).
pub(crate) fn id_schema(kind: &'static str) -> RefOr<Schema> {
    debug_assert!(validate_id(kind, "a").is_ok());
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "A {kind} id: 1 to {ID_BYTES_MAX} characters of [A-Za-z0-9._-], not only dots."
        )))
        .min_length(Some(1))
        .max_length(Some(ID_BYTES_MAX))
        // At least one character that is not a dot, without a lookahead
        // (which RE2-based generators refuse).
        .pattern(Some("^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"))
        .into()
}

/// Lower-case hex of a fixed length.
pub(crate) fn hex_schema(description: &str, digits: usize) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(format!("^[0-9a-f]{{{digits}}}$")))
        .into()
}
