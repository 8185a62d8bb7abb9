//! Reconnect delays: exponential, capped, jittered, so a restarted
//! coordinator is not hit by every worker of the farm in the same instant.

use std::time::Duration;

/// Delays `initial, 2·initial, 4·initial, …` up to `max`, each drawn
/// uniformly from its upper half (`[d/2, d]`).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff { initial, max: max.max(initial), next: initial }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(rand::random::<f64>()) + (d - half * 2)
    }

    /// A connection succeeded: start over from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_their_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        for ceiling in [100u64, 200, 400, 800, 800, 800] {
            let d = b.next_delay();
            let c = Duration::from_millis(ceiling);
            assert!(d <= c && d >= c / 2, "{d:?} not in [{:?}, {c:?}]", c / 2);
        }
    }

    #[test]
    fn reset_starts_over_from_the_initial_delay() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_workers_apart() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            seen.insert(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay());
        }
        assert!(seen.len() > 1, "20 fresh workers all waited exactly the same time");
    }
}
