//! The dataset partitions as the catalogue lists them.

use tokio_postgres::GenericClient;

use super::PARENTS;
use crate::storage::StorageError;

/// One table named like a dataset partition, as the catalogue has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PartitionTable {
    pub(super) parent: &'static str,
    pub(super) ds: i64,
    /// `None` when detached (or never attached).
    pub(super) attached: Option<Attached>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attached {
    Yes,
    /// A `DETACH … CONCURRENTLY` that did not finish.
    DetachPending,
}

/// Every table named like a dataset partition, attached or not.
pub(super) async fn partition_tables(
    client: &impl GenericClient,
) -> Result<Vec<PartitionTable>, StorageError> {
    let rows = client
        .query(
            "SELECT c.relname, p.relname, i.inhdetachpending
             FROM pg_class c
             LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
             LEFT JOIN pg_class p ON p.oid = i.inhparent
             WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace
               AND (c.relname LIKE 'outbox\\_ds%' OR c.relname LIKE 'outbox\\_status\\_ds%')",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: &str = r.get(0);
            let parent: Option<&str> = r.get(1);
            let pending: Option<bool> = r.get(2);
            parse_partition(name, parent, pending)
        })
        .collect())
}

/// A catalogue row as a [`PartitionTable`]; `None` for other tables.
fn parse_partition(
    name: &str,
    parent: Option<&str>,
    detach_pending: Option<bool>,
) -> Option<PartitionTable> {
    let (parent_name, ds) = if let Some(n) = name.strip_prefix("outbox_status_ds") {
        ("outbox_status", n)
    } else {
        ("outbox", name.strip_prefix("outbox_ds")?)
    };
    let ds: i64 = ds.parse().ok()?;
    let attached = match (parent, detach_pending) {
        (Some(_), Some(true)) => Some(Attached::DetachPending),
        (Some(_), _) => Some(Attached::Yes),
        (None, _) => None,
    };
    Some(PartitionTable {
        parent: if parent_name == "outbox" {
            PARENTS[0]
        } else {
            PARENTS[1]
        },
        ds,
        attached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_read_back() {
        let t = parse_partition("outbox_status_ds12", Some("outbox_status"), Some(true));
        assert_eq!(
            t,
            Some(PartitionTable {
                parent: "outbox_status",
                ds: 12,
                attached: Some(Attached::DetachPending)
            })
        );
        let t = parse_partition("outbox_ds3", None, None);
        assert_eq!(
            t.map(|t| (t.parent, t.ds, t.attached)),
            Some(("outbox", 3, None))
        );
        assert_eq!(parse_partition("outbox_dsx", None, None), None);
        assert_eq!(parse_partition("dedup_ds3", None, None), None);
    }
}
