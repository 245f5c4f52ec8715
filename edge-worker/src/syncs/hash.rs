//! A row's fingerprint: which columns a sync reads, and their hash.
//!
//! # Design
//! The hash covers the mapped event fields and their values, not the
//! query's column order: pairs are taken in field order, and objects inside
//! values in key order, each value written with a type tag and lengths, so
//! two encodings are equal only when the values are. SHA-256 (already a
//! dependency, hardware-accelerated where the CPU has it) truncated to 128
//! bits makes a collision between two versions of one key out of reach.
//! Changing the mapping changes every hash, so the next run re-sends rows
//! under their new fields.

use sha2::{Digest, Sha256};

use super::warehouse::{check_columns, Row, WarehouseError};
use crate::config::{ModelConfig, SyncConfig};
use crate::storage::syncs::RowHash;
use serde_json::Value;

/// How a sync reads a result row: the primary key's column, and each
/// mapped event field's column, prepared once per run.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// `(event field, column index)`, sorted by field.
    fields: Vec<(String, usize)>,
    /// The primary key's column index.
    key: usize,
}

/// Why a row's primary key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// The value is SQL `NULL` (or the column is missing from the row).
    Null,
    /// The value is an empty string.
    Empty,
    /// The value is an array or an object.
    NotScalar,
}

impl KeyProblem {
    /// The reason recorded with the invalid row.
    pub fn reason(self) -> &'static str {
        match self {
            KeyProblem::Null => "null primary key",
            KeyProblem::Empty => "empty primary key",
            KeyProblem::NotScalar => "primary key is not a scalar",
        }
    }
}

impl Mapping {
    /// The mapping of `sync` over `model`'s result `columns`; fails naming
    /// the primary key or mapped column the result lacks.
    pub fn new(
        model: &ModelConfig,
        sync: &SyncConfig,
        columns: &[String],
    ) -> Result<Mapping, WarehouseError> {
        check_columns(model, &[sync], columns)?;
        let index = |name: &str| columns.iter().position(|c| c == name).unwrap_or(0);
        Ok(Mapping::from_indices(
            index(&model.primary_key),
            sync.mapping
                .iter()
                .map(|(field, column)| (field.clone(), index(column)))
                .collect(),
        ))
    }

    /// A mapping from column indices (checked by the caller).
    pub(crate) fn from_indices(key: usize, mut fields: Vec<(String, usize)>) -> Mapping {
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        Mapping { fields, key }
    }

    /// The event fields and their values in `row`, in field order.
    pub fn fields<'r>(&'r self, row: &'r Row) -> impl Iterator<Item = (&'r str, &'r Value)> + 'r {
        self.fields
            .iter()
            .map(move |(field, i)| (field.as_str(), row.get(*i).unwrap_or(&Value::Null)))
    }

    /// The row's primary key as text (numbers and booleans as JSON writes them).
    pub fn key_of(&self, row: &Row) -> Result<String, KeyProblem> {
        match row.get(self.key) {
            None | Some(Value::Null) => Err(KeyProblem::Null),
            Some(Value::String(s)) if s.is_empty() => Err(KeyProblem::Empty),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            Some(Value::Array(_) | Value::Object(_)) => Err(KeyProblem::NotScalar),
        }
    }

    /// The row's fingerprint; `scratch` is reused between rows.
    pub fn hash(&self, row: &Row, scratch: &mut Vec<u8>) -> RowHash {
        scratch.clear();
        for (field, value) in self.fields(row) {
            write_str(scratch, field);
            encode(value, scratch);
        }
        let digest = Sha256::digest(&scratch[..]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        RowHash(out)
    }
}

fn write_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Writes `value` with a type tag per node and objects in key order.
fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0),
        Value::Bool(b) => {
            out.push(1);
            out.push(*b as u8);
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                out.push(3);
                out.extend_from_slice(&u.to_le_bytes());
            } else {
                // -0.0 and 0.0 are one number.
                let f = n.as_f64().unwrap_or_default();
                let f = if f == 0.0 { 0.0 } else { f };
                out.push(4);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(5);
            write_str(out, s);
        }
        Value::Array(items) => {
            out.push(6);
            write_len(out, items.len());
            for item in items {
                encode(item, out);
            }
        }
        Value::Object(map) => {
            out.push(7);
            write_len(out, map.len());
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries {
                write_str(out, k);
                encode(v, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hash(m: &Mapping, row: Row) -> RowHash {
        m.hash(&row, &mut Vec::new())
    }

    #[test]
    fn the_hash_ignores_column_order_and_object_key_order() {
        let a = Mapping::from_indices(0, vec![("userId".into(), 0), ("traits.x".into(), 1)]);
        let b = Mapping::from_indices(1, vec![("traits.x".into(), 0), ("userId".into(), 1)]);
        let one = hash(
            &a,
            vec![json!(7), json!({"p": 1, "q": [1, {"b": 2, "a": 3}]})],
        );
        let two = hash(
            &b,
            vec![json!({"q": [1, {"a": 3, "b": 2}], "p": 1}), json!(7)],
        );
        assert_eq!(one, two);
        // Unmapped columns do not count.
        let c = Mapping::from_indices(0, vec![("userId".into(), 0), ("traits.x".into(), 2)]);
        let three = hash(
            &c,
            vec![
                json!(7),
                json!("ignored"),
                json!({"p": 1, "q": [1, {"b": 2, "a": 3}]}),
            ],
        );
        assert_eq!(one, three);
    }

    #[test]
    fn the_hash_tells_values_types_and_fields_apart() {
        let m = Mapping::from_indices(0, vec![("userId".into(), 0), ("traits.x".into(), 1)]);
        let base = hash(&m, vec![json!(1), json!("a")]);
        for other in [
            vec![json!(1), json!("b")],
            vec![json!(1), json!(null)],
            vec![json!(1), json!(["a"])],
            vec![json!("1"), json!("a")],
            vec![json!(1), json!("a\u{0}")],
        ] {
            assert_ne!(hash(&m, other.clone()), base, "{other:?}");
        }
        // The same values under another field are another row.
        let renamed = Mapping::from_indices(0, vec![("userId".into(), 0), ("traits.y".into(), 1)]);
        assert_ne!(hash(&renamed, vec![json!(1), json!("a")]), base);
        // Strings cannot run into each other.
        let pair = Mapping::from_indices(0, vec![("a".into(), 0), ("b".into(), 1)]);
        assert_ne!(
            hash(&pair, vec![json!("ab"), json!("c")]),
            hash(&pair, vec![json!("a"), json!("bc")])
        );
        assert_eq!(
            hash(&m, vec![json!(-0.0), json!(1)]),
            hash(&m, vec![json!(0.0), json!(1)])
        );
    }

    #[test]
    fn keys_are_text_and_nulls_and_empties_are_refused() {
        let m = Mapping::from_indices(0, vec![]);
        assert_eq!(m.key_of(&vec![json!(42)]), Ok("42".into()));
        assert_eq!(m.key_of(&vec![json!("u-1")]), Ok("u-1".into()));
        assert_eq!(m.key_of(&vec![json!(null)]), Err(KeyProblem::Null));
        assert_eq!(m.key_of(&vec![]), Err(KeyProblem::Null));
        assert_eq!(m.key_of(&vec![json!("")]), Err(KeyProblem::Empty));
        assert_eq!(m.key_of(&vec![json!([1])]), Err(KeyProblem::NotScalar));
        assert_eq!(KeyProblem::Null.reason(), "null primary key");
    }
}
