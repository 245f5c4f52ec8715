//! Admin repairs of the graph: split a merge, force a merge.
//!
//! # Design
//! Each profile's nodes and active links form a tree (see [`super::graph`]),
//! so a split deactivates the merge's link and re-derives the two
//! components from the links that remain: the side holding the absorbed
//! profile's end of the link gets that profile's id back, the rest keeps the
//! current id. A barrier between the two ids then stops the next event
//! that carries both sides' identifiers from merging them again; only an
//! admin merge crosses it (issue #4).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use super::merge::{merge, MergeMeta};
use super::profile::{load, ProfileView};
use super::state::GraphState;
use super::{Identity, IdentityError};
use crate::storage::identity::IdentityTx;
use crate::time::now_ms;

/// What a split did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitOutcome {
    /// The merge that was undone.
    pub merge_id: i64,
    /// The profile that kept its id, then the one that got its id back.
    pub profiles: Vec<ProfileView>,
}

/// Undoes merge `merge_id` of profile `profile`.
pub(crate) fn split(
    conn: &dyn IdentityTx,
    state: &mut GraphState,
    profile: &str,
    merge_id: i64,
    actor: &str,
) -> Result<SplitOutcome, IdentityError> {
    // 1. Check everything before the first write.
    let current = conn
        .current_profile(profile)?
        .ok_or_else(|| IdentityError::NotFound(format!("profile `{profile}`")))?;
    let m = conn
        .merge_entry(merge_id)?
        .ok_or_else(|| IdentityError::NotFound(format!("merge {merge_id}")))?;
    if m.split_at_ms.is_some() {
        return Err(IdentityError::Invalid(format!(
            "merge {merge_id} was already split"
        )));
    }
    let belongs = conn.current_profile(&m.survivor)?.as_deref() == Some(current.as_str())
        && conn.current_profile(&m.absorbed)?.as_deref() == Some(current.as_str());
    if !belongs {
        return Err(IdentityError::Invalid(format!(
            "merge {merge_id} is not part of profile `{current}`; see its `merges` in GET /admin/profiles/{current}"
        )));
    }
    let (Some(link_id), Some(start)) = (m.link_id, m.absorbed_node.clone()) else {
        return Err(IdentityError::Invalid(format!(
            "merge {merge_id} has no recorded link to remove"
        )));
    };
    let nodes: HashSet<String> = conn.profile_nodes(&current)?.into_iter().collect();
    let mut adjacency: HashMap<String, Vec<String>> = HashMap::new();
    for (a, b) in conn.active_links(&current, link_id)? {
        if nodes.contains(&b) {
            adjacency.entry(a.clone()).or_default().push(b.clone());
            adjacency.entry(b).or_default().push(a);
        }
    }
    let side = component(&adjacency, &start);
    if !nodes.contains(&start) || side.len() >= nodes.len() {
        return Err(IdentityError::Invalid(format!(
            "merge {merge_id} cannot be split: its identifiers are still linked by other merges; split those first"
        )));
    }

    // 2. Re-derive: deactivate the link, give the absorbed side its id back.
    let now = now_ms();
    let revived = m.absorbed.clone();
    conn.undo_merge(link_id, merge_id, now)?;
    conn.set_merged_into(&revived, None)?;
    for key in &side {
        conn.move_node(key, &revived)?;
        state.forget_node(key);
    }
    // Ids merged earlier on the absorbed side follow it.
    for other in conn.profile_ids(&current)? {
        if other == current || other == revived {
            continue;
        }
        let node = conn.last_absorbed_node(&other)?;
        if node.is_some_and(|n| side.contains(&n)) {
            conn.set_merged_into(&other, Some(revived.as_str()))?;
        }
    }
    conn.insert_block(&current, &revived, merge_id)?;
    state.added(0, 1);
    let detail = serde_json::json!({
        "mergeId": merge_id,
        "profiles": [current, revived],
        "identifiersMoved": side.len(),
    });
    conn.insert_audit(actor, "split", &current, &detail.to_string(), now)?;

    let mut profiles = Vec::with_capacity(2);
    for id in [&current, &revived] {
        profiles.extend(load(conn, id)?);
    }
    Ok(SplitOutcome { merge_id, profiles })
}

/// The nodes reachable from `start`.
fn component(adjacency: &HashMap<String, Vec<String>>, start: &str) -> HashSet<String> {
    let mut seen = HashSet::from([start.to_owned()]);
    let mut queue = VecDeque::from([start.to_owned()]);
    while let Some(node) = queue.pop_front() {
        for next in adjacency.get(&node).into_iter().flatten() {
            if seen.insert(next.clone()) {
                queue.push_back(next.clone());
            }
        }
    }
    seen
}

/// Merges two profiles whatever the guards say; the older id survives.
pub(crate) fn force_merge(
    conn: &dyn IdentityTx,
    state: &mut GraphState,
    a: &str,
    b: &str,
    actor: &str,
    reason: Option<&str>,
) -> Result<ProfileView, IdentityError> {
    let not_found = |id: &str| IdentityError::NotFound(format!("profile `{id}`"));
    let pa = conn.current_profile(a)?.ok_or_else(|| not_found(a))?;
    let pb = conn.current_profile(b)?.ok_or_else(|| not_found(b))?;
    if pa == pb {
        return Err(IdentityError::Invalid(format!(
            "`{a}` and `{b}` are already one profile, `{pa}`"
        )));
    }
    let (Some(na), Some(nb)) = (conn.first_node(&pa)?, conn.first_node(&pb)?) else {
        return Err(IdentityError::Invalid(
            "a profile without identifiers cannot be merged".into(),
        ));
    };
    let now = now_ms();
    let link_id = conn.insert_link(&na, &nb, "admin", None, now)?;
    let identifiers = serde_json::to_string(&[&na, &nb]).unwrap_or_default();
    let survivor = merge(
        conn,
        state,
        &Arc::from(pa.as_str()),
        &Arc::from(pb.as_str()),
        MergeMeta {
            cause: "admin",
            message_id: None,
            identifiers: &identifiers,
            link_id: Some(link_id),
            absorbed_side_node: &nb,
            group_side_node: &na,
            actor: Some(actor),
        },
        now,
    )?;
    let detail =
        serde_json::json!({ "profiles": [pa, pb], "survivor": &*survivor, "reason": reason });
    conn.insert_audit(actor, "merge", &survivor, &detail.to_string(), now)?;
    load(conn, &survivor)?.ok_or_else(|| not_found(&survivor))
}

impl Identity {
    /// Undoes one merge of a profile (admin).
    pub async fn split(
        &self,
        profile: String,
        merge_id: i64,
        actor: String,
    ) -> Result<SplitOutcome, IdentityError> {
        self.admin_write(move |conn, state| split(conn, state, &profile, merge_id, &actor))
            .await
    }

    /// Merges two profiles whatever the guards say (admin).
    pub async fn force_merge(
        &self,
        a: String,
        b: String,
        actor: String,
        reason: Option<String>,
    ) -> Result<ProfileView, IdentityError> {
        self.admin_write(move |conn, state| {
            force_merge(conn, state, &a, &b, &actor, reason.as_deref())
        })
        .await
    }
}
