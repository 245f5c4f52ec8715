//! Merging two profiles: the older id survives, the absorbed profile's
//! nodes move to it, the cache follows, and the merge is logged with its
//! cause. Used by linking ([`super::graph`]) and by an admin's forced merge.

use std::sync::Arc;

use super::state::GraphState;
use crate::storage::identity::{IdentityTx, MergeRecord};
use crate::storage::StorageError;

/// Describes a merge for the log.
pub(crate) struct MergeMeta<'a> {
    pub cause: &'a str,
    pub message_id: Option<&'a str>,
    pub identifiers: &'a str,
    pub link_id: Option<i64>,
    /// The link's endpoint in the second profile.
    pub absorbed_side_node: &'a str,
    /// The link's endpoint in the first profile.
    pub group_side_node: &'a str,
    pub actor: Option<&'a str>,
}

/// Merges two profiles; the older id survives. Returns the survivor.
pub(crate) fn merge(
    conn: &dyn IdentityTx,
    state: &mut GraphState,
    a: &Arc<str>,
    b: &Arc<str>,
    meta: MergeMeta<'_>,
    now_ms: i64,
) -> Result<Arc<str>, StorageError> {
    let (a_created, b_created) = (conn.profile_created(a)?, conn.profile_created(b)?);
    let a_survives = (a_created, &**a) <= (b_created, &**b);
    let (survivor, absorbed, absorbed_node) = if a_survives {
        (a, b, meta.absorbed_side_node)
    } else {
        (b, a, meta.group_side_node)
    };
    let moved = conn.profile_nodes(absorbed)?;
    conn.merge_profiles(survivor, absorbed)?;
    conn.insert_merge(
        &MergeRecord {
            survivor,
            absorbed,
            cause: meta.cause,
            message_id: meta.message_id,
            identifiers: meta.identifiers,
            link_id: meta.link_id,
            absorbed_node: Some(absorbed_node),
            actor: meta.actor,
        },
        now_ms,
    )?;
    state.repoint(&moved, survivor);
    Ok(Arc::clone(survivor))
}
