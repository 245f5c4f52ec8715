//! Versioned PostgreSQL migrations, applied at start under an advisory lock.
//!
//! Each module that keeps tables registers its steps in [`MODULES`]; step
//! N (1-based) is version N of that module and is never edited once
//! shipped. Several workers starting at once take turns on the advisory
//! lock, so each step runs once. A database whose recorded version is above
//! what this binary knows is refused: an older worker must not write a
//! newer schema.

use tokio_postgres::Client;

use super::super::StorageError;

/// One module's migrations.
pub(crate) struct PgMigrations {
    /// The module's name in `waymark_schema`.
    pub module: &'static str,
    /// Step N is version N.
    pub steps: &'static [&'static str],
}

/// Every module's migrations, in the order they are applied.
pub(crate) const MODULES: &[PgMigrations] = &[
    PgMigrations {
        module: "core",
        steps: super::schema::CORE,
    },
    PgMigrations {
        module: "identity",
        steps: super::identity::MIGRATIONS,
    },
    PgMigrations {
        module: "syncs",
        steps: super::syncs::MIGRATIONS,
    },
];

/// The advisory lock key ("Waymark" in ASCII).
const LOCK_KEY: i64 = 0x0057_6179_6d61_726b;

/// Applies every pending step of [`MODULES`].
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StorageError> {
    migrate_modules(client, MODULES).await
}

/// Applies every pending step of `modules` (tests pass their own).
pub(crate) async fn migrate_modules(
    client: &mut Client,
    modules: &[PgMigrations],
) -> Result<(), StorageError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS waymark_schema (
                module      text NOT NULL,
                version     integer NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (module, version))",
        )
        .await
        .or_else(|e| {
            // Two workers creating it at once: one loses the race, harmlessly.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(StorageError::from(e))
            }
        })?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply(client, modules).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result?;
    unlock?;
    Ok(())
}

async fn apply(client: &mut Client, modules: &[PgMigrations]) -> Result<(), StorageError> {
    for m in modules {
        let found: i32 = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM waymark_schema WHERE module = $1",
                &[&m.module],
            )
            .await?
            .get(0);
        let known = m.steps.len() as i32;
        if found > known {
            return Err(StorageError::SchemaTooNew {
                module: m.module.to_owned(),
                found,
                known,
            });
        }
        for (i, step) in m.steps.iter().enumerate().skip(found as usize) {
            let version = i as i32 + 1;
            let tx = client.transaction().await?;
            tx.batch_execute(step).await?;
            tx.execute(
                "INSERT INTO waymark_schema (module, version) VALUES ($1, $2)",
                &[&m.module, &version],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(module = m.module, version, "PostgreSQL migration applied.");
        }
    }
    Ok(())
}
