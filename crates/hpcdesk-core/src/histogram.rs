//! [`Histogram`]: a latency histogram for Prometheus, lock-free (one atomic per bucket), with
//! buckets from 5 ms to 30 s. Shared by the server's and the gateway's metrics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Appends the histogram in Prometheus' text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {total}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_count_is_everything() {
        let h = Histogram::default();
        for ms in [1, 7, 7, 300, 40_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        h.render(&mut out, "t_seconds", "test");
        assert!(out.contains("# TYPE t_seconds histogram"));
        assert!(out.contains("t_seconds_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"0.01\"} 3\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"0.5\"} 4\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"30\"} 4\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("t_seconds_count 5\n"), "{out}");
        assert!(out.contains("t_seconds_sum 40.315\n"), "{out}");
    }
}
