//! A log-linear latency histogram (HdrHistogram's layout with 32 sub-buckets
//! per power of two, so a recorded value is off by at most 1/32): recording
//! is an index computation and an increment, merging is adding arrays.

use std::time::Duration;

/// Values below this many nanoseconds get a bucket each.
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above [`LINEAR`].
const SUB: u64 = 32;
/// Buckets needed for every `u64` nanosecond count.
const BUCKETS: usize = (LINEAR + (64 - 6) * SUB) as usize;

/// Counts of request latencies.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

fn index(ns: u64) -> usize {
    if ns < LINEAR {
        return ns as usize;
    }
    let exp = 63 - u64::from(ns.leading_zeros()); // >= 6
    let shift = exp - 5;
    let mantissa = (ns >> shift) - SUB; // 0..32
    (LINEAR + (exp - 6) * SUB + mantissa) as usize
}

/// The largest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let exp = (i - LINEAR) / SUB + 6;
    let mantissa = (i - LINEAR) % SUB + SUB;
    let shift = exp - 5;
    ((mantissa + 1) << shift).saturating_sub(1)
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(ns)] += 1;
        self.total += 1;
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The latency at quantile `q` (0.0 to 1.0), as its bucket's upper bound.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(upper(i));
            }
        }
        Duration::from_nanos(upper(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_a_32nd() {
        for ns in [0u64, 1, 63, 64, 65, 1000, 123_456, 9_999_999, u64::MAX / 3] {
            let i = index(ns);
            assert!(i < BUCKETS);
            assert!(upper(i) >= ns, "{ns}");
            assert!((upper(i) - ns) as f64 <= ns as f64 / 32.0 + 1.0, "{ns}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        assert!((500.0..=520.0).contains(&p50), "{p50}");
        let p999 = h.quantile(0.999).as_micros() as f64;
        assert!((999.0..=1032.0).contains(&p999), "{p999}");
    }
}
