//! Per-connection rate limits: messages per second and bytes per second, each a
//! token bucket (`governor`) with bursts of twice the rate.
//!
//! A message over a limit is dropped and the client told (on `/ws`, a
//! `rate-limited` error). A client that keeps flooding collects strikes; past
//! [`STRIKES_PER_WINDOW`] in [`STRIKE_WINDOW`] it is closed with 1008. Each limiter
//! is a few atomics; nothing is allocated per message.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// One token bucket. On the standard clock: governor's default (quanta) clock
/// keeps its calibration in every limiter, which made three limiters the
/// largest part of an idle connection.
type Limiter = RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

/// Dropped messages tolerated within [`STRIKE_WINDOW`] before the connection is closed.
pub const STRIKES_PER_WINDOW: u32 = 20;
/// The window over which strikes are counted.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// Which limit a message broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Messages per second.
    Messages,
    /// Bytes per second.
    Bytes,
}

impl Limit {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Messages => "messages",
            Limit::Bytes => "bytes",
        }
    }
}

/// One connection's limiters: none at all (no memory) when both rates are unlimited.
pub struct RateLimits {
    limiters: Option<Box<Limiters>>,
}

struct Limiters {
    messages: Option<Limiter>,
    bytes: Option<Limiter>,
    strikes: Limiter,
}

impl RateLimits {
    /// Limits of `messages_per_second` and `bytes_per_second` (0: unlimited).
    /// The byte bucket always holds at least `largest_frame`, so one frame the
    /// server accepts can never be over the limit on its own.
    pub fn new(messages_per_second: u32, bytes_per_second: u32, largest_frame: usize) -> RateLimits {
        let bucket = |rate: u32, burst: u32| {
            let rate = NonZeroU32::new(rate)?;
            let burst = NonZeroU32::new(burst.max(rate.get()))?;
            Some(RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), MonotonicClock))
        };
        let largest_frame = u32::try_from(largest_frame).unwrap_or(u32::MAX);
        let strike_rate = Quota::with_period(STRIKE_WINDOW / STRIKES_PER_WINDOW)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(STRIKES_PER_WINDOW).expect("non-zero"));
        let messages = bucket(messages_per_second, messages_per_second.saturating_mul(2));
        let bytes = bucket(bytes_per_second, bytes_per_second.saturating_mul(2).max(largest_frame));
        if messages.is_none() && bytes.is_none() {
            return RateLimits { limiters: None };
        }
        let strikes = RateLimiter::direct_with_clock(strike_rate, MonotonicClock);
        RateLimits { limiters: Some(Box::new(Limiters { messages, bytes, strikes })) }
    }

    /// Admits a message of `len` bytes, or names the limit it breaks.
    pub fn check(&self, len: usize) -> Result<(), Limit> {
        let Some(limiters) = &self.limiters else { return Ok(()) };
        if let Some(messages) = &limiters.messages {
            messages.check().map_err(|_| Limit::Messages)?;
        }
        if let (Some(bytes), Some(len)) = (&limiters.bytes, NonZeroU32::new(u32::try_from(len).unwrap_or(u32::MAX))) {
            match bytes.check_n(len) {
                Ok(Ok(())) => {}
                _ => return Err(Limit::Bytes),
            }
        }
        Ok(())
    }

    /// Records a dropped message; `true` when the client has earned a close.
    pub fn strike(&self) -> bool {
        self.limiters.as_ref().is_some_and(|limiters| limiters.strikes.check().is_err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_of_twice_the_rate_then_refusals() {
        let limits = RateLimits::new(5, 0, 0);
        let admitted = (0..100).filter(|_| limits.check(10).is_ok()).count();
        assert_eq!(admitted, 10, "a burst of twice the rate");
        assert_eq!(limits.check(10), Err(Limit::Messages));
    }

    #[test]
    fn byte_limit_counts_bytes_and_admits_one_largest_frame() {
        let limits = RateLimits::new(0, 100, 1000);
        assert_eq!(limits.check(1000), Ok(()));
        assert_eq!(limits.check(10), Err(Limit::Bytes));
    }

    #[test]
    fn zero_means_unlimited() {
        let limits = RateLimits::new(0, 0, 0);
        assert!((0..10_000).all(|_| limits.check(100_000).is_ok()));
    }

    #[test]
    fn persistent_flooding_earns_a_close() {
        let limits = RateLimits::new(1, 0, 0);
        let strikes_before_close = (0..100).take_while(|_| !limits.strike()).count();
        assert_eq!(strikes_before_close, STRIKES_PER_WINDOW as usize);
    }
}
