//! Preparing a run's plan (shared by the dry run and the executor): find
//! the sync, its model and warehouse, its id and previous run's size, open
//! the model's row stream and build the planner over the tracked state.

use crate::config::{Config, ModelConfig, SyncConfig};
use crate::storage::syncs::{ObjectKind, RunFilter};
use crate::storage::SyncStore;
use crate::syncs::dry_run::DryRunError;
use crate::syncs::plan::{load_state, PlanOptions, Planner};
use crate::syncs::warehouse::{self, RowStream, Warehouse};
use crate::syncs::Mapping;
use std::sync::Arc;

/// A sync ready to be planned: the model's rows not yet read, and the
/// planner holding the tracked state.
pub struct Prepared<'c> {
    /// The sync's settings.
    pub sync: &'c SyncConfig,
    /// Its model's settings.
    pub model: &'c ModelConfig,
    /// The sync's numeric id in the store.
    pub id: i64,
    /// Rows the previous run's query returned (0 for none).
    pub previous_rows: u64,
    /// The warehouse the rows come from.
    pub warehouse: Arc<dyn Warehouse>,
    /// The model's rows, streamed in batches.
    pub rows: RowStream,
    /// The planner, to be fed `rows`' batches.
    pub planner: Planner,
}

/// The sync `name`, its model and warehouse (index and settings).
pub fn lookup<'c>(
    config: &'c Config,
    name: &str,
) -> Result<(&'c SyncConfig, &'c ModelConfig, usize), DryRunError> {
    let unknown = || DryRunError::UnknownSync(name.to_owned());
    let sync = config
        .syncs
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(unknown)?;
    // References were checked when the config loaded.
    let model = config
        .models
        .iter()
        .find(|m| m.name == sync.model)
        .ok_or_else(unknown)?;
    let index = config
        .warehouses
        .iter()
        .position(|w| w.name == model.warehouse)
        .ok_or_else(unknown)?;
    Ok((sync, model, index))
}

/// The store's id of the sync `name`.
pub async fn sync_id(store: &dyn SyncStore, name: &str) -> Result<i64, DryRunError> {
    store
        .object_ids(ObjectKind::Sync, vec![name.to_owned()])
        .await?
        .first()
        .map(|o| o.id)
        .ok_or_else(|| DryRunError::UnknownSync(name.to_owned()))
}

/// Opens the sync `name`'s model and builds its planner; with `full`,
/// every current row is planned as added (`fullResync`).
pub async fn prepare<'c>(
    config: &'c Config,
    store: &dyn SyncStore,
    name: &str,
    full: bool,
) -> Result<Prepared<'c>, DryRunError> {
    let (sync, model, index) = lookup(config, name)?;
    let warehouse = &config.warehouses[index];
    let id = sync_id(store, &sync.name).await?;
    // The newest run that read the model: not the run being prepared (its
    // query size is not known yet), nor one that failed before reading.
    let recent = RunFilter {
        limit: 20,
        ..RunFilter::default()
    };
    let previous_rows = store
        .runs(id, recent)
        .await?
        .iter()
        .find_map(|r| r.query_size.filter(|_| r.status.is_finished()))
        .unwrap_or(0);
    let source = warehouse::open(warehouse, index)?;
    let rows = source.stream(&model.query, warehouse.batch_rows).await?;
    let mapping = Mapping::new(model, sync, rows.columns())?;
    let expected = usize::try_from(previous_rows).unwrap_or(usize::MAX);
    let state = load_state(store, id, expected).await?;
    let options = PlanOptions {
        mode: sync.mode,
        full_resync: full,
        fail_on_zero_rows: sync.fail_on_zero_rows,
        previous_rows,
    };
    let planner = Planner::new(mapping, state, options);
    Ok(Prepared {
        sync,
        model,
        id,
        previous_rows,
        warehouse: source,
        rows,
        planner,
    })
}
