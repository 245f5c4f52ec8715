//! Merging two profiles: the older id survives, the absorbed profile's
//! nodes move to it, the cache follows, and the merge is logged with its
//! cause. Used by linking ([`super::graph`]) and by an admin's forced merge.

use std::sync::Arc;

use rusqlite::Connection;

use super::state::GraphState;
use super::store::{self, MergeRecord};
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
    conn: &Connection,
    state: &mut GraphState,
    a: &Arc<str>,
    b: &Arc<str>,
    meta: MergeMeta<'_>,
    now_ms: i64,
) -> Result<Arc<str>, StorageError> {
    let (a_created, b_created) = (
        store::profile_created(conn, a)?,
        store::profile_created(conn, b)?,
    );
    let a_survives = (a_created, &**a) <= (b_created, &**b);
    let (survivor, absorbed, absorbed_node) = if a_survives {
        (a, b, meta.absorbed_side_node)
    } else {
        (b, a, meta.group_side_node)
    };
    let moved = store::profile_nodes(conn, absorbed)?;
    store::merge_profiles(conn, survivor, absorbed)?;
    store::insert_merge(
        conn,
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
