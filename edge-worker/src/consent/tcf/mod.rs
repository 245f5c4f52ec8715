//! The IAB TCF v2.2 TC string, decoded by the worker itself.
//!
//! A TC string is up to four segments joined by `.`, each web-safe base64
//! without padding: the core segment (always first), then optionally the
//! disclosed-vendors segment (type 1), the allowed-vendors segment (type 2,
//! read and ignored: TCF v2.2 dropped it) and the publisher-TC segment
//! (type 3). Field widths follow IAB's "Consent string and vendor list
//! formats v2" and its reference encoder `@iabtechlabtcf/core`, against
//! whose strings the tests check this decoder.
//!
//! # Design
//! Pure Rust, no dependency: the format is a few dozen fixed-width fields,
//! and the decoder must be cheap on the per-event path and safe on hostile
//! input (issue 13). Vendor sets are kept as sorted ranges, so a range
//! entry `1-65535` costs one pair, never 64 Ki bits.

mod bits;
mod vendors;

#[cfg(test)]
mod tests;

use bits::BitReader;
pub use vendors::VendorSet;

/// Why a TC string was refused. Any of these grants nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TcfError {
    /// The string is empty.
    #[error("tc string: empty")]
    Empty,
    /// A character outside web-safe base64 (`A-Z a-z 0-9 - _`).
    #[error("tc string: not web-safe base64 without padding")]
    NotBase64,
    /// A field runs past the end of its segment.
    #[error("tc string: truncated")]
    Truncated,
    /// The core segment's version is not 2.
    #[error("tc string: version {0} is not supported (only TCF v2)")]
    UnsupportedVersion(u8),
    /// An optional segment of an unknown type.
    #[error("tc string: unknown segment type {0}")]
    UnknownSegment(u8),
    /// The same optional segment twice.
    #[error("tc string: segment type {0} appears twice")]
    DuplicateSegment(u8),
    /// A letter code (language, country) outside `A`-`Z`.
    #[error("tc string: a letter code is outside A-Z")]
    BadLetter,
    /// A vendor range whose end is below its start, or an id of 0.
    #[error("tc string: vendor range {start}-{end} is invalid")]
    BadRange {
        /// First id of the range.
        start: u16,
        /// Last id of the range.
        end: u16,
    },
    /// A vendor range reaching past the section's maximum vendor id.
    #[error("tc string: vendor id {id} is above the section's maximum {max}")]
    AboveMaxVendor {
        /// The offending id.
        id: u16,
        /// The section's `MaxVendorId`.
        max: u16,
    },
}

/// A publisher restriction type (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionType {
    /// 0: the purpose is not allowed for these vendors.
    NotAllowed,
    /// 1: these vendors need consent for the purpose.
    RequireConsent,
    /// 2: these vendors need legitimate interest for the purpose.
    RequireLegitimateInterest,
    /// 3: undefined by the specification.
    Undefined,
}

/// One publisher restriction: a purpose, its type and the vendors it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherRestriction {
    /// The purpose restricted (1-based).
    pub purpose_id: u8,
    /// What the restriction says.
    pub restriction: RestrictionType,
    /// The vendors it applies to.
    pub vendors: VendorSet,
}

/// The optional publisher-TC segment (type 3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublisherTc {
    /// Publisher purpose consents, bit `n-1` for purpose `n` (24 purposes).
    pub purpose_consents: u32,
    /// Publisher purpose legitimate interests, as above.
    pub purpose_legitimate_interests: u32,
    /// Number of custom purposes (6 bits).
    pub num_custom_purposes: u8,
    /// Custom purpose consents, bit `n-1` for custom purpose `n`.
    pub custom_purpose_consents: u64,
    /// Custom purpose legitimate interests, as above.
    pub custom_purpose_legitimate_interests: u64,
}

/// A decoded TC string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcString {
    /// Always 2.
    pub version: u8,
    /// When the string was first created, in deciseconds since the Unix epoch.
    pub created_ds: u64,
    /// When it was last updated, in deciseconds since the Unix epoch.
    pub last_updated_ds: u64,
    /// The CMP's registered id.
    pub cmp_id: u16,
    /// The CMP's version.
    pub cmp_version: u16,
    /// The screen on which consent was given.
    pub consent_screen: u8,
    /// The language of the consent UI, two upper-case letters.
    pub consent_language: [u8; 2],
    /// The Global Vendor List version.
    pub vendor_list_version: u16,
    /// The TCF policy version (4 for TCF v2.2).
    pub policy_version: u8,
    /// The string applies to one service only.
    pub is_service_specific: bool,
    /// The publisher used non-standard texts.
    pub use_non_standard_texts: bool,
    /// Special feature opt-ins, bit `n-1` for special feature `n` (12).
    pub special_feature_opt_ins: u16,
    /// Purpose consents, bit `n-1` for purpose `n` (24).
    pub purpose_consents: u32,
    /// Purpose legitimate interests (transparency established), as above.
    pub purpose_legitimate_interests: u32,
    /// Purpose 1 was not disclosed (special jurisdiction treatment).
    pub purpose_one_treatment: bool,
    /// The publisher's country, two upper-case letters.
    pub publisher_country_code: [u8; 2],
    /// Vendors with consent.
    pub vendor_consents: VendorSet,
    /// Vendors with legitimate interest established.
    pub vendor_legitimate_interests: VendorSet,
    /// Publisher restrictions, in string order.
    pub publisher_restrictions: Vec<PublisherRestriction>,
    /// The disclosed-vendors segment, if present.
    pub disclosed_vendors: Option<VendorSet>,
    /// The publisher-TC segment, if present.
    pub publisher_tc: Option<PublisherTc>,
}

impl TcString {
    /// Whether the visitor consented to TCF purpose `id` (1-24).
    pub fn purpose_consent(&self, id: u8) -> bool {
        bit(self.purpose_consents, id)
    }

    /// Whether vendor `id` has the visitor's consent.
    pub fn vendor_consent(&self, id: u16) -> bool {
        self.vendor_consents.contains(id)
    }

    /// The consent language as text.
    pub fn consent_language(&self) -> &str {
        std::str::from_utf8(&self.consent_language).unwrap_or("")
    }

    /// The publisher's country code as text.
    pub fn publisher_country_code(&self) -> &str {
        std::str::from_utf8(&self.publisher_country_code).unwrap_or("")
    }
}

/// Whether bit `id - 1` of a 1-based purpose field is set.
fn bit(field: u32, id: u8) -> bool {
    (1..=24).contains(&id) && field & (1 << (id - 1)) != 0
}

/// Reads an `n`-bit purpose field into a mask, bit `i-1` for purpose `i`.
fn purpose_field(r: &mut BitReader, n: usize) -> Result<u64, TcfError> {
    let mut mask = 0u64;
    for i in 0..n {
        if r.flag()? {
            mask |= 1 << i;
        }
    }
    Ok(mask)
}

/// Decodes a TC string. This is the one entry point: the consent stage and
/// the fuzz target call it.
///
/// ```
/// // Made by IAB's `@iabtechlabtcf/core` (tests/node/tcf/make.js).
/// let tc = waymark::consent::tcf::decode(
///     "COsdsoAOsdsoAHjSNYENZ2E_-IDBf0LXYIYgAGB_wAJCEAIcACAAMAAkJACAAGAAwAAA.IAEhCAAA",
/// )
/// .unwrap();
/// assert_eq!(tc.cmp_id, 483);
/// assert!(tc.purpose_consent(1) && !tc.purpose_consent(2));
/// assert!(tc.vendor_consent(4) && !tc.vendor_consent(3));
/// assert!(waymark::consent::tcf::decode("not a tc string").is_err());
/// ```
pub fn decode(input: &str) -> Result<TcString, TcfError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(TcfError::Empty);
    }
    let mut segments = input.split('.');
    let core = segments.next().ok_or(TcfError::Empty)?;
    let mut tc = decode_core(core)?;
    let mut seen = [false; 4];
    for segment in segments {
        let mut r = BitReader::new(segment)?;
        let kind = r.uint(3)? as u8;
        if let Some(s) = seen.get_mut(usize::from(kind)) {
            if *s {
                return Err(TcfError::DuplicateSegment(kind));
            }
            *s = true;
        }
        match kind {
            1 => tc.disclosed_vendors = Some(VendorSet::read_section(&mut r)?),
            // Allowed vendors (TCF v2.0 only): read to check it, then dropped.
            2 => {
                VendorSet::read_section(&mut r)?;
            }
            3 => tc.publisher_tc = Some(decode_publisher_tc(&mut r)?),
            other => return Err(TcfError::UnknownSegment(other)),
        }
    }
    Ok(tc)
}

/// The core segment.
fn decode_core(segment: &str) -> Result<TcString, TcfError> {
    let mut r = BitReader::new(segment)?;
    let version = r.uint(6)? as u8;
    if version != 2 {
        return Err(TcfError::UnsupportedVersion(version));
    }
    Ok(TcString {
        version,
        created_ds: r.uint(36)?,
        last_updated_ds: r.uint(36)?,
        cmp_id: r.u16(12)?,
        cmp_version: r.u16(12)?,
        consent_screen: r.uint(6)? as u8,
        consent_language: r.letters()?,
        vendor_list_version: r.u16(12)?,
        policy_version: r.uint(6)? as u8,
        is_service_specific: r.flag()?,
        use_non_standard_texts: r.flag()?,
        special_feature_opt_ins: purpose_field(&mut r, 12)? as u16,
        purpose_consents: purpose_field(&mut r, 24)? as u32,
        purpose_legitimate_interests: purpose_field(&mut r, 24)? as u32,
        purpose_one_treatment: r.flag()?,
        publisher_country_code: r.letters()?,
        vendor_consents: VendorSet::read_section(&mut r)?,
        vendor_legitimate_interests: VendorSet::read_section(&mut r)?,
        publisher_restrictions: decode_restrictions(&mut r)?,
        disclosed_vendors: None,
        publisher_tc: None,
    })
}

/// The publisher restrictions section of the core segment.
fn decode_restrictions(r: &mut BitReader) -> Result<Vec<PublisherRestriction>, TcfError> {
    let count = r.u16(12)?;
    // Each restriction takes at least 20 bits: never reserve more than
    // the string can hold.
    let mut out = Vec::with_capacity(usize::from(count).min(r.remaining() / 20));
    for _ in 0..count {
        let purpose_id = r.uint(6)? as u8;
        let restriction = match r.uint(2)? {
            0 => RestrictionType::NotAllowed,
            1 => RestrictionType::RequireConsent,
            2 => RestrictionType::RequireLegitimateInterest,
            _ => RestrictionType::Undefined,
        };
        let vendors = VendorSet::read_ranges(r, None)?;
        out.push(PublisherRestriction {
            purpose_id,
            restriction,
            vendors,
        });
    }
    Ok(out)
}

/// The publisher-TC segment, after its type bits.
fn decode_publisher_tc(r: &mut BitReader) -> Result<PublisherTc, TcfError> {
    let purpose_consents = purpose_field(r, 24)? as u32;
    let purpose_legitimate_interests = purpose_field(r, 24)? as u32;
    let num_custom_purposes = r.uint(6)? as u8;
    let n = usize::from(num_custom_purposes);
    Ok(PublisherTc {
        purpose_consents,
        purpose_legitimate_interests,
        num_custom_purposes,
        custom_purpose_consents: purpose_field(r, n)?,
        custom_purpose_legitimate_interests: purpose_field(r, n)?,
    })
}
