//! `[consent]`: how the TC string and Google Consent Mode map onto Waymark's
//! purposes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;

/// The purposes of TCF v2.2 (1-11) a mapping may name.
pub const TCF_PURPOSES: std::ops::RangeInclusive<u8> = 1..=11;

/// The Consent Mode v2 consent types a mapping may name.
pub const GCM_FIELDS: &[&str] = &[
    "ad_storage",
    "analytics_storage",
    "ad_user_data",
    "ad_personalization",
    "functionality_storage",
    "personalization_storage",
    "security_storage",
];

/// The `[consent]` table.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    /// How TCF purposes grant Waymark purposes.
    #[serde(default)]
    pub tcf: TcfConfig,
    /// How Google Consent Mode fields grant Waymark purposes.
    #[serde(default)]
    pub gcm: GcmConfig,
}

/// `[consent.tcf]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcfConfig {
    /// Per Waymark purpose, the TCF purposes (1-11) that must all have the
    /// visitor's consent in the TC string. Default:
    /// `{ analytics = [1, 8], marketing = [1, 3, 4] }`.
    #[serde(default = "default_tcf_purposes")]
    pub purposes: BTreeMap<String, Vec<u8>>,
}

impl Default for TcfConfig {
    fn default() -> TcfConfig {
        TcfConfig {
            purposes: default_tcf_purposes(),
        }
    }
}

/// `[consent.gcm]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcmConfig {
    /// Per Waymark purpose, the Consent Mode fields of `context.consent.gcm`
    /// that must all be `granted`. Default:
    /// `{ analytics = ["analytics_storage"], marketing = ["ad_storage", "ad_user_data"] }`.
    #[serde(default = "default_gcm_purposes")]
    pub purposes: BTreeMap<String, Vec<String>>,
}

impl Default for GcmConfig {
    fn default() -> GcmConfig {
        GcmConfig {
            purposes: default_gcm_purposes(),
        }
    }
}

fn default_tcf_purposes() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("analytics".to_owned(), vec![1, 8]),
        ("marketing".to_owned(), vec![1, 3, 4]),
    ])
}

fn default_gcm_purposes() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        ("analytics".to_owned(), vec!["analytics_storage".to_owned()]),
        (
            "marketing".to_owned(),
            vec!["ad_storage".to_owned(), "ad_user_data".to_owned()],
        ),
    ])
}

/// A Waymark purpose name: lower-case letters, digits and `_`.
pub(crate) fn valid_purpose(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl ConsentConfig {
    /// Checks every mapping: purpose names, TCF ids in 1-11, known Consent
    /// Mode fields, no empty list.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (purpose, ids) in &self.tcf.purposes {
            let key = format!("consent.tcf.purposes.{purpose}");
            check_purpose(&key, purpose)?;
            if ids.is_empty() {
                return Err(ConfigError::invalid(
                    key,
                    "the list is empty, so any TC string would grant it; name the TCF purposes (1-11) it needs or remove the key",
                ));
            }
            if let Some(bad) = ids.iter().find(|id| !TCF_PURPOSES.contains(*id)) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{bad} is not a TCF v2.2 purpose; use ids 1 to 11"),
                ));
            }
        }
        for (purpose, fields) in &self.gcm.purposes {
            let key = format!("consent.gcm.purposes.{purpose}");
            check_purpose(&key, purpose)?;
            if fields.is_empty() {
                return Err(ConfigError::invalid(
                    key,
                    "the list is empty; name the Consent Mode fields it needs or remove the key",
                ));
            }
            if let Some(bad) = fields.iter().find(|f| !GCM_FIELDS.contains(&f.as_str())) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "`{bad}` is not a Consent Mode field; use one of {}",
                        GCM_FIELDS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_purpose(key: &str, purpose: &str) -> Result<(), ConfigError> {
    if valid_purpose(purpose) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("`{purpose}` is not a purpose name; use lower-case letters, digits and `_`"),
        ))
    }
}

/// An example `[consent]` table (the defaults, written out).
#[cfg(test)]
const EXAMPLE: &str = r#"
[consent.tcf]
purposes = { analytics = [1, 8], marketing = [1, 3, 4] }

[consent.gcm]
purposes = { analytics = ["analytics_storage"], marketing = ["ad_storage", "ad_user_data"] }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConsentConfig, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            consent: ConsentConfig,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        doc.consent.validate()?;
        Ok(doc.consent)
    }

    #[test]
    fn the_example_is_the_default() {
        let example = parse(EXAMPLE).expect("example parses");
        let default = ConsentConfig::default();
        assert_eq!(example.tcf.purposes, default.tcf.purposes);
        assert_eq!(example.gcm.purposes, default.gcm.purposes);
        assert_eq!(parse("").expect("empty").tcf.purposes, default.tcf.purposes);
    }

    #[test]
    fn bad_mappings_are_refused_with_the_key_named() {
        for (text, key) in [
            (
                "[consent.tcf]\npurposes = { analytics = [0] }",
                "consent.tcf.purposes.analytics",
            ),
            (
                "[consent.tcf]\npurposes = { analytics = [12] }",
                "consent.tcf.purposes.analytics",
            ),
            (
                "[consent.tcf]\npurposes = { marketing = [] }",
                "consent.tcf.purposes.marketing",
            ),
            (
                "[consent.tcf]\npurposes = { \"Ads!\" = [1] }",
                "consent.tcf.purposes.Ads!",
            ),
            (
                "[consent.gcm]\npurposes = { marketing = [\"ads_storage\"] }",
                "consent.gcm.purposes.marketing",
            ),
            (
                "[consent.gcm]\npurposes = { analytics = [] }",
                "consent.gcm.purposes.analytics",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        for (text, key) in [
            (
                "[consent.tcf]\npurposes = { analytics = [\"one\"] }",
                "purposes",
            ),
            ("[consent.tcf]\npurpose = { analytics = [1] }", "purpose"),
            ("[consent.gcm]\npurposes = { analytics = [1] }", "purposes"),
            ("[consent.iab]\n", "iab"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
