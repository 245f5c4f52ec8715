//! The checks of [`super::validate`]: each entry on its own, then the
//! references between warehouses, models, syncs and destinations.

use super::super::{unique, ConfigError, DestinationConfig};
use super::{
    CronSchedule, ModelConfig, Schedule, SyncCall, SyncConfig, SyncMode, WarehouseConfig,
    WarehouseKind, MIRROR_DESTINATIONS,
};

impl WarehouseConfig {
    fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let at = |key: &str| format!("warehouses[{index}].{key}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("name"),
                "empty; give the warehouse a name",
            ));
        }
        match self.kind {
            WarehouseKind::Postgres => {
                if self.path.is_some() {
                    return Err(ConfigError::invalid(
                        at("path"),
                        "only for type = \"sqlite\"; a postgres warehouse takes url_env",
                    ));
                }
                if self.resolve_url(index)?.is_none() {
                    return Err(ConfigError::invalid(
                        at("url_env"),
                        "type = \"postgres\" needs a URL; set url_env to a variable holding postgres://user:password@host:port/database",
                    ));
                }
            }
            WarehouseKind::Sqlite => {
                if self.url.is_some() || self.url_env.is_some() {
                    return Err(ConfigError::invalid(
                        at("url_env"),
                        "only for type = \"postgres\"; a sqlite warehouse takes path",
                    ));
                }
                if self.path.is_none() {
                    return Err(ConfigError::invalid(
                        at("path"),
                        "type = \"sqlite\" needs the database file; set path",
                    ));
                }
            }
        }
        if self.connect_timeout_ms == 0 || self.connect_timeout_ms > 600_000 {
            return Err(ConfigError::invalid(
                at("connect_timeout_ms"),
                format!(
                    "{} is out of range; use 1 to 600000",
                    self.connect_timeout_ms
                ),
            ));
        }
        if self.batch_rows == 0 || self.batch_rows > 100_000 {
            return Err(ConfigError::invalid(
                at("batch_rows"),
                format!("{} is out of range; use 1 to 100000", self.batch_rows),
            ));
        }
        Ok(())
    }
}

impl ModelConfig {
    fn validate(&self, index: usize, warehouses: &[WarehouseConfig]) -> Result<(), ConfigError> {
        let at = |key: &str| format!("models[{index}].{key}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("name"),
                "empty; give the model a name",
            ));
        }
        if !warehouses.iter().any(|w| w.name == self.warehouse) {
            return Err(ConfigError::invalid(
                at("warehouse"),
                format!(
                    "no warehouse named `{}`; define it in a [[warehouses]] table",
                    self.warehouse
                ),
            ));
        }
        if self.query.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("query"),
                "empty; give the SQL query whose rows the model holds",
            ));
        }
        if self.primary_key.trim().is_empty() {
            return Err(ConfigError::invalid(
                at("primary_key"),
                "empty; name the result column that identifies a row",
            ));
        }
        Ok(())
    }
}

impl SyncConfig {
    fn validate(
        &self,
        index: usize,
        models: &[ModelConfig],
        destinations: &[DestinationConfig],
    ) -> Result<(), ConfigError> {
        let at = |key: &str| format!("syncs[{index}].{key}");
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::invalid(
                at("name"),
                format!(
                    "`{}` is not a slug; use letters, digits, `-` and `_`",
                    self.name
                ),
            ));
        }
        if !models.iter().any(|m| m.name == self.model) {
            return Err(ConfigError::invalid(
                at("model"),
                format!(
                    "no model named `{}`; define it in a [[models]] table",
                    self.model
                ),
            ));
        }
        let Some(destination) = destinations.iter().find(|d| d.name == self.destination) else {
            return Err(ConfigError::invalid(
                at("destination"),
                format!(
                    "no destination named `{}`; define it in a [[destinations]] table",
                    self.destination
                ),
            ));
        };
        if self.mode == SyncMode::Mirror
            && !MIRROR_DESTINATIONS.contains(&destination.kind.as_str())
        {
            return Err(ConfigError::invalid(
                at("mode"),
                format!(
                    "destination `{}` (type {}) cannot remove rows, so mode = \"mirror\" is refused; use upsert, or a file or webhook destination",
                    destination.name, destination.kind
                ),
            ));
        }
        match (self.call, &self.event) {
            (SyncCall::Track, None) => {
                return Err(ConfigError::invalid(
                    at("event"),
                    "call = \"track\" needs the event name; set event = \"...\"",
                ))
            }
            (SyncCall::Track, Some(name)) if name.trim().is_empty() => {
                return Err(ConfigError::invalid(at("event"), "empty; name the event"))
            }
            (SyncCall::Identify | SyncCall::Group, Some(_)) => {
                return Err(ConfigError::invalid(
                    at("event"),
                    "only for call = \"track\"; remove it",
                ))
            }
            _ => {}
        }
        self.validate_mapping(index)?;
        if let Some(schedule) = &self.schedule {
            match schedule {
                Schedule::EverySecs(0) => {
                    return Err(ConfigError::invalid(
                        at("schedule.every_secs"),
                        "0 is out of range; use at least 1",
                    ))
                }
                Schedule::EverySecs(_) => {}
                Schedule::Cron(text) => {
                    CronSchedule::parse(text)
                        .map_err(|problem| ConfigError::invalid(at("schedule.cron"), problem))?;
                }
            }
        }
        Ok(())
    }

    fn validate_mapping(&self, index: usize) -> Result<(), ConfigError> {
        let roots: &[&str] = match self.call {
            SyncCall::Identify => &["userId", "anonymousId", "timestamp", "traits", "context"],
            SyncCall::Track => &[
                "userId",
                "anonymousId",
                "timestamp",
                "properties",
                "context",
            ],
            SyncCall::Group => &[
                "userId",
                "anonymousId",
                "groupId",
                "timestamp",
                "traits",
                "context",
            ],
        };
        let call = match self.call {
            SyncCall::Identify => "identify",
            SyncCall::Track => "track",
            SyncCall::Group => "group",
        };
        for (field, column) in &self.mapping {
            let key = format!("syncs[{index}].mapping.\"{field}\"");
            let mut parts = field.split('.');
            let root = parts.next().unwrap_or_default();
            let rest: Vec<&str> = parts.collect();
            let nested = matches!(root, "traits" | "properties" | "context");
            if !roots.contains(&root)
                || (nested && rest.is_empty())
                || (!nested && !rest.is_empty())
            {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "not a field of a {call} call; map to one of {}",
                        roots
                            .iter()
                            .map(|r| match *r {
                                "traits" | "properties" | "context" => format!("{r}.<name>"),
                                other => other.to_owned(),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if rest.iter().any(|p| p.is_empty()) {
                return Err(ConfigError::invalid(
                    key,
                    "has an empty path segment; write names separated by single dots",
                ));
            }
            if field == "context.waymark" || field.starts_with("context.waymark.") {
                return Err(ConfigError::invalid(
                    key,
                    "context.waymark is set by Waymark (it names the sync and run); map to another field",
                ));
            }
            if column.trim().is_empty() {
                return Err(ConfigError::invalid(key, "empty; name a result column"));
            }
        }
        let has = |f: &str| self.mapping.contains_key(f);
        if !has("userId") && !has("anonymousId") {
            return Err(ConfigError::invalid(
                format!("syncs[{index}].mapping"),
                "maps neither userId nor anonymousId; map one of them to a column",
            ));
        }
        if self.call == SyncCall::Group && !has("groupId") {
            return Err(ConfigError::invalid(
                format!("syncs[{index}].mapping"),
                "call = \"group\" needs groupId; map it to a column",
            ));
        }
        Ok(())
    }
}

/// Checks the three sections: unique names, each model's warehouse, each
/// sync's model and destination, and what each sync's call and mode allow.
pub(crate) fn validate(
    warehouses: &[WarehouseConfig],
    models: &[ModelConfig],
    syncs: &[SyncConfig],
    destinations: &[DestinationConfig],
) -> Result<(), ConfigError> {
    unique("warehouses", warehouses.iter().map(|w| w.name.as_str()))?;
    unique("models", models.iter().map(|m| m.name.as_str()))?;
    unique("syncs", syncs.iter().map(|s| s.name.as_str()))?;
    for (i, warehouse) in warehouses.iter().enumerate() {
        warehouse.validate(i)?;
    }
    for (i, model) in models.iter().enumerate() {
        model.validate(i, warehouses)?;
    }
    for (i, sync) in syncs.iter().enumerate() {
        sync.validate(i, models, destinations)?;
    }
    Ok(())
}
