//! The configured syncs, models and destinations with their stable ids,
//! as one request of the API sees them.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::config::{Config, DestinationConfig, ModelConfig, SyncConfig};
use crate::storage::syncs::{ObjectId, ObjectKind, RunFilter, SyncRun};
use crate::storage::StorageError;
use crate::syncs::api_types::{ApiId, ApiSync};
use crate::syncs::Syncs;

/// Every configured sync, model and destination with its id, in
/// configuration order.
///
/// # Design
/// Ids come from the store (`SyncStore::object_ids`), which creates one
/// the first time it sees a name and never changes or reuses it, so ids
/// survive restarts and reordering. They are asked for once per router
/// ([`IdCache`]): the configuration does not change while the worker runs,
/// and asking again would write for nothing (PostgreSQL's `ON CONFLICT`
/// would also use up sequence numbers).
pub struct Catalog<'s> {
    syncs: &'s Syncs,
    ids: &'s Ids,
}

/// The ids of the configured objects, loaded on the API's first request
/// (a failed load is tried again on the next).
#[derive(Debug, Clone, Default)]
pub struct IdCache(Arc<OnceCell<Ids>>);

/// Ids in configuration order, one list per kind.
#[derive(Debug)]
struct Ids {
    syncs: Vec<ObjectId>,
    models: Vec<ObjectId>,
    destinations: Vec<ObjectId>,
}

impl Ids {
    async fn load(syncs: &Syncs) -> Result<Ids, StorageError> {
        let config = syncs.config();
        let ids = |kind, names: Vec<String>| async move {
            if names.is_empty() {
                Ok(Vec::new())
            } else {
                syncs.ids(kind, names).await
            }
        };
        Ok(Ids {
            syncs: ids(
                ObjectKind::Sync,
                config.syncs.iter().map(|s| s.name.clone()).collect(),
            )
            .await?,
            models: ids(
                ObjectKind::Model,
                config.models.iter().map(|m| m.name.clone()).collect(),
            )
            .await?,
            destinations: ids(
                ObjectKind::Destination,
                config.destinations.iter().map(|d| d.name.clone()).collect(),
            )
            .await?,
        })
    }
}

impl<'s> Catalog<'s> {
    /// The ids of everything `syncs` configures, from `cache`.
    pub async fn load(syncs: &'s Syncs, cache: &'s IdCache) -> Result<Catalog<'s>, StorageError> {
        let ids = cache.0.get_or_try_init(|| Ids::load(syncs)).await?;
        Ok(Catalog { syncs, ids })
    }

    fn config(&self) -> &'s Config {
        self.syncs.config()
    }

    /// Each sync with its id, in configuration order.
    pub fn syncs(&self) -> impl Iterator<Item = (&'s SyncConfig, &ObjectId)> {
        self.config().syncs.iter().zip(&self.ids.syncs)
    }

    /// The sync with `id`.
    pub fn sync(&self, id: ApiId) -> Option<(&'s SyncConfig, &ObjectId)> {
        self.syncs().find(|(_, o)| o.id == id.0)
    }

    /// The sync named `slug`.
    pub fn sync_named(&self, slug: &str) -> Option<(&'s SyncConfig, &ObjectId)> {
        self.syncs().find(|(s, _)| s.name == slug)
    }

    /// The model with `id`.
    pub fn model(&self, id: ApiId) -> Option<(&'s ModelConfig, &ObjectId)> {
        self.config()
            .models
            .iter()
            .zip(&self.ids.models)
            .find(|(_, o)| o.id == id.0)
    }

    /// The destination with `id`.
    pub fn destination(&self, id: ApiId) -> Option<(&'s DestinationConfig, &ObjectId)> {
        self.config()
            .destinations
            .iter()
            .zip(&self.ids.destinations)
            .find(|(_, o)| o.id == id.0)
    }

    /// The id of the model `name` (0 if it is not configured, which the
    /// config's checks rule out).
    pub fn model_id(&self, name: &str) -> ApiId {
        find_id(&self.config().models, &self.ids.models, |m| m.name == name)
    }

    /// The id of the destination `name` (0 if it is not configured).
    pub fn destination_id(&self, name: &str) -> ApiId {
        find_id(&self.config().destinations, &self.ids.destinations, |d| {
            d.name == name
        })
    }

    /// The ids of the syncs that `keep` selects, as the API writes them.
    pub fn sync_ids_where(&self, keep: impl Fn(&SyncConfig) -> bool) -> Vec<ApiId> {
        self.syncs()
            .filter(|(s, _)| keep(s))
            .map(|(_, o)| ApiId(o.id))
            .collect()
    }

    /// The API's view of `sync`, with its last run.
    pub async fn api_sync(
        &self,
        sync: &SyncConfig,
        id: &ObjectId,
    ) -> Result<ApiSync, StorageError> {
        let last = self.last_run(id.id).await?;
        let primary_key = self
            .config()
            .models
            .iter()
            .find(|m| m.name == sync.model)
            .map_or("", |m| m.primary_key.as_str());
        Ok(ApiSync::of(
            sync,
            primary_key,
            id,
            self.model_id(&sync.model),
            self.destination_id(&sync.destination),
            last.as_ref(),
        ))
    }

    async fn last_run(&self, sync: i64) -> Result<Option<SyncRun>, StorageError> {
        let filter = RunFilter {
            limit: 1,
            ..RunFilter::default()
        };
        Ok(self
            .syncs
            .store()
            .runs(sync, filter)
            .await?
            .into_iter()
            .next())
    }
}

fn find_id<T>(items: &[T], ids: &[ObjectId], is: impl Fn(&T) -> bool) -> ApiId {
    items
        .iter()
        .zip(ids)
        .find(|(item, _)| is(item))
        .map_or(ApiId(0), |(_, o)| ApiId(o.id))
}
