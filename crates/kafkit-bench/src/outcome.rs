//! `Outcome`: what one client's round measured, and how rounds become a table row.

use std::time::Duration;

/// Rounds per client; each client's median round is reported.
pub const ROUNDS: usize = 3;

/// One client's round: records handled, how many failed, and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub records: usize,
    pub failed: usize,
    pub elapsed: Duration,
}

impl Outcome {
    /// Records per second.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// This rate as a percentage of `baseline`'s.
    pub fn percent_of(&self, baseline: &Outcome) -> f64 {
        100.0 * self.rate() / baseline.rate()
    }

    /// The Markdown row `| name | records/s | MB/s | seconds |`, for records of `size` bytes;
    /// the caller appends its last column.
    pub fn row(&self, name: &str, size: usize) -> String {
        format!(
            "| {name} | {:.0} | {:.1} | {:.2} |",
            self.rate(),
            self.rate() * size as f64 / 1e6,
            self.elapsed.as_secs_f64()
        )
    }
}

/// The median of `rounds` by elapsed time; `outcome` finds a round's [`Outcome`].
pub fn median<T>(mut rounds: Vec<T>, outcome: impl Fn(&T) -> &Outcome) -> T {
    rounds.sort_by_key(|round| outcome(round).elapsed);
    rounds.swap_remove(rounds.len() / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn took(millis: u64) -> Outcome {
        Outcome {
            records: 1_000,
            failed: 0,
            elapsed: Duration::from_millis(millis),
        }
    }

    #[test]
    fn the_median_round_is_the_middle_one_by_time() {
        let rounds = vec![(took(300), 'a'), (took(100), 'b'), (took(200), 'c')];
        assert_eq!(median(rounds, |(outcome, _)| outcome), (took(200), 'c'));
    }

    #[test]
    fn a_row_shows_rate_throughput_and_seconds() {
        // 1,000 records of 100 bytes in half a second: 2,000 records/s, 0.2 MB/s.
        assert_eq!(
            took(500).row("client", 100),
            "| client | 2000 | 0.2 | 0.50 |"
        );
        assert_eq!(took(500).percent_of(&took(250)), 50.0);
    }
}
