//! What no crate provides: strategic merge patch ([`strategic`]), field sets in the FieldsV1
//! encoding ([`fields`]) and server-side apply with per-manager field ownership
//! (`managedFields`, [`apply`]). RFC 7386 merge patches and RFC 6902 JSON patches are the
//! `json-patch` crate's (see `server/patching.rs`).

mod apply;
mod fields;
mod strategic;

pub(crate) use apply::{record_update, server_side_apply};
pub(crate) use strategic::strategic_merge_patch;

use std::collections::BTreeSet;

/// A field path in FieldsV1 tokens: `["f:spec", "f:template", ..., "k:{\"name\":\"app\"}", "f:image"]`.
pub(crate) type FieldPath = Vec<String>;
pub(crate) type FieldSet = BTreeSet<FieldPath>;
