//! How long a channel's text was held back: the time from the batch its bytes arrived in to
//! the batch that released them (a guard holds text where a match could still begin, so a value
//! split over tokens is judged whole).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When the text a channel holds arrived: runs of bytes, oldest first, whose lengths add up to
/// what it held after its last answer.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    runs: VecDeque<(usize, Instant)>,
}

/// The time of one batch, read from the clock only when a hold starts or ends (most batches
/// hold nothing and never read it).
#[derive(Debug, Default)]
pub(super) struct BatchClock(Option<Instant>);

impl BatchClock {
    pub(super) fn now(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }

    pub(super) fn reset(&mut self) {
        self.0 = None;
    }
}

impl Arrivals {
    /// The channel's pending text (what it held, then what arrived in this batch) was answered:
    /// `released` bytes went out and `kept` are held on. Returns how long the oldest released
    /// byte had waited, if any released byte had been held.
    pub(super) fn answered(&mut self, released: usize, kept: usize, clock: &mut BatchClock) -> Option<Duration> {
        let waited = match self.runs.front() {
            Some(&(_, arrived)) if released > 0 => Some(clock.now().saturating_duration_since(arrived)),
            _ => None,
        };
        let mut left = released;
        while let Some(run) = self.runs.front_mut().filter(|_| left > 0) {
            if run.0 <= left {
                left -= run.0;
                self.runs.pop_front();
            } else {
                run.0 -= left;
                left = 0;
            }
        }
        // What is kept beyond the older runs arrived in this batch.
        let new = kept.saturating_sub(self.runs.iter().map(|run| run.0).sum());
        if new > 0 {
            self.runs.push_back((new, clock.now()));
        }
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_released_byte_sets_the_wait() {
        let mut arrivals = Arrivals::default();
        let t0 = Instant::now();
        let mut clock = BatchClock(Some(t0));
        assert_eq!(arrivals.answered(4, 0, &mut clock), None, "nothing held: no wait");
        assert_eq!(arrivals.answered(2, 3, &mut clock), None, "3 of 5 new bytes held");
        let mut clock = BatchClock(Some(t0 + Duration::from_millis(10)));
        // Held 3 (t0), 4 arrive: 2 of the old go out, 1 old and all 4 new are kept.
        assert_eq!(arrivals.answered(2, 5, &mut clock), Some(Duration::from_millis(10)));
        assert_eq!(arrivals.runs, VecDeque::from([(1, t0), (4, t0 + Duration::from_millis(10))]));
        let mut clock = BatchClock(Some(t0 + Duration::from_millis(30)));
        // The last old byte and 2 newer ones go out: the oldest waited 30 ms.
        assert_eq!(arrivals.answered(3, 2, &mut clock), Some(Duration::from_millis(30)));
        let mut clock = BatchClock(Some(t0 + Duration::from_millis(35)));
        assert_eq!(arrivals.answered(2, 0, &mut clock), Some(Duration::from_millis(25)));
        assert!(arrivals.runs.is_empty());
    }

    #[test]
    fn a_batch_that_holds_nothing_never_reads_the_clock() {
        let mut arrivals = Arrivals::default();
        let mut clock = BatchClock::default();
        assert_eq!(arrivals.answered(10, 0, &mut clock), None);
        assert!(clock.0.is_none());
    }
}
