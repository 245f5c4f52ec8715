//! A sync's past and pending runs, newest first, in the shape Hightouch's
//! API gives them (`waymark sync runs NAME`).

use crate::config::Config;
use crate::storage::syncs::RunFilter;
use crate::storage::SyncStore;
use crate::syncs::api_types::ApiSyncRun;
use crate::syncs::dry_run::DryRunError;

use super::prepare::{lookup, sync_id};

/// Up to `limit` runs of the sync `name` (0 means 100), newest first.
/// An unknown name is an error naming it, never an empty list.
pub async fn history(
    config: &Config,
    store: &dyn SyncStore,
    name: &str,
    limit: usize,
) -> Result<Vec<ApiSyncRun>, DryRunError> {
    lookup(config, name)?;
    let id = sync_id(store, name).await?;
    let runs = store
        .runs(
            id,
            RunFilter {
                limit,
                ..RunFilter::default()
            },
        )
        .await?;
    Ok(runs.iter().map(ApiSyncRun::from).collect())
}
