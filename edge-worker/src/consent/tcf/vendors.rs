//! Vendor sets: the bitfield and range encodings of a TC string's vendor
//! sections, kept as sorted, merged ranges of ids.

use super::bits::BitReader;
use super::TcfError;

/// A set of vendor ids (1-65535).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VendorSet {
    /// The section's `MaxVendorId` (0 for publisher-restriction sets).
    pub max_id: u16,
    /// Whether the section used the range encoding.
    pub range_encoded: bool,
    /// Sorted, disjoint, non-adjacent inclusive ranges.
    ranges: Vec<(u16, u16)>,
}

impl VendorSet {
    /// Whether `id` is in the set.
    pub fn contains(&self, id: u16) -> bool {
        let i = self.ranges.partition_point(|&(_, end)| end < id);
        self.ranges.get(i).is_some_and(|&(start, _)| start <= id)
    }

    /// The ids in the set, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|&(s, e)| s..=e)
    }

    /// Number of ids in the set.
    pub fn len(&self) -> usize {
        self.ranges
            .iter()
            .map(|&(s, e)| usize::from(e - s) + 1)
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// A vendor section: `MaxVendorId` (16), `IsRangeEncoding` (1), then a
    /// bitfield of `MaxVendorId` bits or a range list.
    pub(super) fn read_section(r: &mut BitReader) -> Result<VendorSet, TcfError> {
        let max_id = r.u16(16)?;
        if r.flag()? {
            let mut set = VendorSet::read_ranges(r, Some(max_id))?;
            set.max_id = max_id;
            return Ok(set);
        }
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for id in 1..=max_id {
            if !r.flag()? {
                continue;
            }
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == id => *end = id,
                _ => ranges.push((id, id)),
            }
        }
        Ok(VendorSet {
            max_id,
            range_encoded: false,
            ranges,
        })
    }

    /// A range list: `NumEntries` (12), then per entry `IsARange` (1),
    /// `StartOrOnlyVendorId` (16) and, for a range, `EndVendorId` (16).
    /// With `max`, ids above it are refused.
    pub(super) fn read_ranges(r: &mut BitReader, max: Option<u16>) -> Result<VendorSet, TcfError> {
        let count = r.u16(12)?;
        // An entry takes at least 17 bits: reserve no more than fits.
        let mut ranges = Vec::with_capacity(usize::from(count).min(r.remaining() / 17));
        for _ in 0..count {
            let is_range = r.flag()?;
            let start = r.u16(16)?;
            let end = if is_range { r.u16(16)? } else { start };
            if start == 0 || end < start {
                return Err(TcfError::BadRange { start, end });
            }
            if let Some(max) = max.filter(|&m| end > m) {
                return Err(TcfError::AboveMaxVendor { id: end, max });
            }
            ranges.push((start, end));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some((_, last)) if u32::from(start) <= u32::from(*last) + 1 => {
                    *last = (*last).max(end)
                }
                _ => merged.push((start, end)),
            }
        }
        Ok(VendorSet {
            max_id: 0,
            range_encoded: true,
            ranges: merged,
        })
    }
}
