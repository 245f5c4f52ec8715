//! The `file` destination: NDJSON, one event per line, rotated by size and age.
//!
//! A batch is appended and `fsync`ed before it is reported delivered, so an
//! event leaves the outbox only once it is durable in the file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;

use super::{encode, parse_settings, BuildContext, DeliveryError, Destination, Outcome};
use crate::config::ConfigError;
use crate::storage::OutboxEntry;

/// An example `file` destination.
pub const EXAMPLE: &str = r#"
[[destinations]]
name = "lake"
type = "file"
path = "events.ndjson"
max_bytes = 104857600
rotate_secs = 86400
"#;

/// Settings for the `file` destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// File to append to; relative paths are inside `storage.data_dir`.
    pub path: PathBuf,
    /// Rotate when the file reaches this size, in bytes. Default: 104857600 (100 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotate when the file is this old, in seconds. Default: 86400 (a day).
    #[serde(default = "default_rotate_secs")]
    pub rotate_secs: u64,
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_rotate_secs() -> u64 {
    86_400
}

impl FileConfig {
    /// Parses the settings table.
    pub fn parse(settings: toml::Table, key: &str) -> Result<FileConfig, ConfigError> {
        parse_settings(settings, key)
    }

    /// Opens the file (creating its directory) and returns the destination.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Destination>, ConfigError> {
        let path = if self.path.is_absolute() {
            self.path.clone()
        } else {
            cx.data_dir.join(&self.path)
        };
        let state = FileState::open(&path).map_err(|e| {
            ConfigError::invalid(
                "settings.path",
                format!(
                    "cannot open {}: {e}; check the directory is writable",
                    path.display()
                ),
            )
        })?;
        Ok(Box::new(FileDestination {
            path,
            max_bytes: self.max_bytes.max(1),
            rotate_after: Duration::from_secs(self.rotate_secs.max(1)),
            state: Arc::new(Mutex::new(state)),
        }))
    }
}

struct FileState {
    file: File,
    size: u64,
    opened: Instant,
}

impl FileState {
    fn open(path: &std::path::Path) -> std::io::Result<FileState> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        repair_torn_tail(path)?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(FileState {
            file,
            size,
            opened: Instant::now(),
        })
    }
}

/// Cuts a partial last line left by a crash mid-write. Its events were not
/// reported delivered, so they are still in the outbox and are written again;
/// without the cut, the next line would be glued to the fragment.
fn repair_torn_tail(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Scan backwards in chunks for the last newline.
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(pos) = chunk[..n].iter().rposition(|b| *b == b'\n') {
            let keep = start + pos as u64 + 1;
            if keep != len {
                file.set_len(keep)?;
                file.sync_data()?;
            }
            return Ok(());
        }
        if start == 0 {
            file.set_len(0)?;
            return file.sync_data();
        }
        end = start;
    }
}

struct FileDestination {
    path: PathBuf,
    max_bytes: u64,
    rotate_after: Duration,
    state: Arc<Mutex<FileState>>,
}

impl FileDestination {
    /// Renames the current file to `<stem>.<unix ms>.<ext>` and starts a new one.
    fn rotate(path: &std::path::Path, state: &mut FileState) -> std::io::Result<()> {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("events");
        let ext = path
            .extension()
            .and_then(|s| s.to_str())
            .unwrap_or("ndjson");
        let rotated = path.with_file_name(format!("{stem}.{}.{ext}", crate::time::now_ms()));
        std::fs::rename(path, rotated)?;
        *state = FileState::open(path)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Destination for FileDestination {
    fn max_batch(&self) -> usize {
        1_000
    }

    async fn send(&self, events: &[OutboxEntry]) -> Vec<Outcome> {
        // An entry that is not a JSON object would break the NDJSON file:
        // it is dead-lettered alone.
        let mut batch = encode::check_raw(events, "file", usize::MAX);
        let positions: Vec<usize> = (0..batch.items.len()).collect();
        let result = self.append(&batch, events).await;
        batch.settle_items(&positions, &result);
        batch.finish()
    }
}

impl FileDestination {
    /// Appends the checked events as lines, durably.
    async fn append(
        &self,
        batch: &encode::Encoded<()>,
        events: &[OutboxEntry],
    ) -> Result<(), DeliveryError> {
        let mut buf = Vec::with_capacity(events.iter().map(|e| e.json.len() + 1).sum());
        for item in &batch.items {
            buf.extend_from_slice(events[item.index].json.as_bytes());
            buf.push(b'\n');
        }
        if batch.items.is_empty() {
            return Ok(());
        }
        let state = Arc::clone(&self.state);
        let path = self.path.clone();
        let (max_bytes, rotate_after) = (self.max_bytes, self.rotate_after);
        tokio::task::spawn_blocking(move || {
            let mut state = state
                .lock()
                .map_err(|_| DeliveryError::retriable("file destination lock poisoned"))?;
            let io = |e: std::io::Error| DeliveryError::retriable(format!("file: {e}"));
            if state.size > 0
                && (state.size + buf.len() as u64 > max_bytes
                    || state.opened.elapsed() >= rotate_after)
            {
                FileDestination::rotate(&path, &mut state).map_err(io)?;
            }
            state.file.write_all(&buf).map_err(io)?;
            // Durable before the outbox forgets the events.
            state.file.sync_data().map_err(io)?;
            state.size += buf.len() as u64;
            Ok(())
        })
        .await
        .map_err(|_| DeliveryError::retriable("file destination task failed"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_on_open() {
        let dir = std::env::temp_dir().join(format!("waymark-torn-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("e.ndjson");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        FileState::open(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        std::fs::write(&path, "{\"b\":").unwrap();
        FileState::open(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    fn entry(i: i64) -> OutboxEntry {
        OutboxEntry {
            id: i,
            source: "web".into(),
            message_id: format!("m{i}"),
            granted: Default::default(),
            json: format!(r#"{{"messageId":"m{i}"}}"#).into(),
            enqueued_at_ms: 0,
            attempts: 0,
        }
    }

    #[test]
    fn the_example_parses_and_a_misspelt_key_is_named() {
        let mut settings = crate::destinations::example_settings(EXAMPLE);
        assert!(FileConfig::parse(settings.clone(), "x").is_ok());
        settings.insert("max_byte".into(), toml::Value::Integer(1));
        let err = FileConfig::parse(settings, "destinations[0].settings").unwrap_err();
        assert!(err.to_string().contains("max_byte"), "{err}");
    }

    #[tokio::test]
    async fn batches_append_as_lines_and_rotate_by_size() {
        let dir = std::env::temp_dir().join(format!("waymark-file-{}", uuid::Uuid::new_v4()));
        let cx = BuildContext {
            data_dir: dir.clone(),
        };
        let config = FileConfig {
            path: "out/events.ndjson".into(),
            max_bytes: 40,
            rotate_secs: 3600,
        };
        let dest = config.build(&cx).unwrap();
        let outcomes = dest.send(&[entry(1), entry(2)]).await;
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Delivered)));
        let text = std::fs::read_to_string(dir.join("out/events.ndjson")).unwrap();
        assert_eq!(text.lines().count(), 2);
        dest.send(&[entry(3)]).await;
        let files = std::fs::read_dir(dir.join("out")).unwrap().count();
        assert_eq!(files, 2, "the full file was rotated");
        let text = std::fs::read_to_string(dir.join("out/events.ndjson")).unwrap();
        assert_eq!(text, "{\"messageId\":\"m3\"}\n");
    }
}
