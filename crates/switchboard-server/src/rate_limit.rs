//! Per-connection rate limits: messages per second and bytes per second, each a
//! token bucket (`governor`) with bursts of twice the rate.
//!
//! A message over a limit is dropped and the client told (on `/ws`, a
//! `rate-limited` error). A client that keeps flooding collects strikes; past
//! [`STRIKES_PER_WINDOW`] in [`STRIKE_WINDOW`] it is closed with 1008. Each limiter
//! is a few atomics; nothing is allocated per message.
//!
//! The buckets cost an idle connection nothing: they are allocated with the
//! first message, and dropped again once the connection has been silent long
//! enough for every bucket to be full ([`RateLimits::full_after`]), when they
//! are exactly as a fresh set would be. Most connections send a few messages
//! (a join, a handful of relays) and then stay quiet for minutes.

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

/// The rates every connection is held to (0: unlimited), shared by all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// Messages per second.
    pub messages: u32,
    /// Bytes per second.
    pub bytes: u32,
}

impl RateSpec {
    fn is_unlimited(self) -> bool {
        self.messages == 0 && self.bytes == 0
    }
}

/// One connection's limiters: none at all (no memory) while it is quiet, or
/// when both rates are unlimited.
pub struct RateLimits {
    /// The largest frame the connection accepts, which the byte bucket must hold.
    largest_frame: u32,
    /// A strike was taken since the limiters were made: the strike bucket is not full.
    struck: bool,
    /// The limiters were made since [`RateLimits::take_fresh`] last looked.
    fresh: bool,
    limiters: Option<Box<Limiters>>,
}

struct Limiters {
    messages: Option<Limiter>,
    bytes: Option<Limiter>,
    strikes: Limiter,
}

impl Limiters {
    fn new(spec: RateSpec, largest_frame: u32) -> Limiters {
        let bucket = |rate: u32, burst: u32| {
            let rate = NonZeroU32::new(rate)?;
            let burst = NonZeroU32::new(burst.max(rate.get()))?;
            Some(RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), MonotonicClock))
        };
        let strike_rate = Quota::with_period(STRIKE_WINDOW / STRIKES_PER_WINDOW)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(STRIKES_PER_WINDOW).expect("non-zero"));
        Limiters {
            messages: bucket(spec.messages, spec.messages.saturating_mul(2)),
            bytes: bucket(spec.bytes, byte_burst(spec, largest_frame)),
            strikes: RateLimiter::direct_with_clock(strike_rate, MonotonicClock),
        }
    }
}

/// The byte bucket's size: twice the rate, and at least one largest frame.
fn byte_burst(spec: RateSpec, largest_frame: u32) -> u32 {
    spec.bytes.saturating_mul(2).max(largest_frame)
}

impl RateLimits {
    /// Limits for a connection whose largest accepted frame is `largest_frame`.
    /// Nothing is allocated until the first message.
    pub fn new(largest_frame: usize) -> RateLimits {
        RateLimits {
            largest_frame: u32::try_from(largest_frame).unwrap_or(u32::MAX),
            struck: false,
            fresh: false,
            limiters: None,
        }
    }

    /// Admits a message of `len` bytes, or names the limit it breaks.
    pub fn check(&mut self, spec: RateSpec, len: usize) -> Result<(), Limit> {
        if spec.is_unlimited() {
            return Ok(());
        }
        let largest_frame = self.largest_frame;
        let limiters = match &mut self.limiters {
            Some(limiters) => limiters,
            slot @ None => {
                self.fresh = true;
                slot.insert(Box::new(Limiters::new(spec, largest_frame)))
            }
        };
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
    pub fn strike(&mut self) -> bool {
        self.struck = true;
        self.limiters.as_ref().is_some_and(|limiters| limiters.strikes.check().is_err())
    }

    /// How long a silence makes every bucket full again (so the limiters can
    /// be dropped); `None` while there are none.
    pub fn full_after(&self, spec: RateSpec) -> Option<Duration> {
        self.limiters.as_ref()?;
        // A bucket of `burst` at `rate` per second refills in burst / rate seconds.
        let refill = |rate: u32, burst: u32| match rate {
            0 => Duration::ZERO,
            rate => Duration::from_millis(u64::from(burst).saturating_mul(1000).div_ceil(u64::from(rate))),
        };
        let messages = refill(spec.messages, spec.messages.saturating_mul(2));
        let bytes = refill(spec.bytes, byte_burst(spec, self.largest_frame));
        let strikes = if self.struck { STRIKE_WINDOW } else { Duration::ZERO };
        Some(messages.max(bytes).max(strikes))
    }

    /// After `silent` without a message: drops the limiters if every bucket is
    /// full again. Returns whether any are left.
    pub fn relax(&mut self, spec: RateSpec, silent: Duration) -> bool {
        if self.full_after(spec).is_some_and(|after| silent >= after) {
            self.limiters = None;
            self.struck = false;
        }
        self.limiters.is_some()
    }

    /// Whether the limiters were made since the last call: the connection's
    /// timer must come back by [`RateLimits::full_after`] to drop them.
    pub fn take_fresh(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(messages: u32, bytes: u32) -> RateSpec {
        RateSpec { messages, bytes }
    }

    #[test]
    fn bursts_of_twice_the_rate_then_refusals() {
        let mut limits = RateLimits::new(0);
        let admitted = (0..100).filter(|_| limits.check(spec(5, 0), 10).is_ok()).count();
        assert_eq!(admitted, 10, "a burst of twice the rate");
        assert_eq!(limits.check(spec(5, 0), 10), Err(Limit::Messages));
    }

    #[test]
    fn byte_limit_counts_bytes_and_admits_one_largest_frame() {
        let mut limits = RateLimits::new(1000);
        assert_eq!(limits.check(spec(0, 100), 1000), Ok(()));
        assert_eq!(limits.check(spec(0, 100), 10), Err(Limit::Bytes));
    }

    #[test]
    fn zero_means_unlimited_and_allocates_nothing() {
        let mut limits = RateLimits::new(0);
        assert!((0..10_000).all(|_| limits.check(spec(0, 0), 100_000).is_ok()));
        assert_eq!(limits.full_after(spec(0, 0)), None);
        assert!(!limits.take_fresh());
    }

    #[test]
    fn persistent_flooding_earns_a_close() {
        let mut limits = RateLimits::new(0);
        let _ = limits.check(spec(1, 0), 1);
        let strikes_before_close = (0..100).take_while(|_| !limits.strike()).count();
        assert_eq!(strikes_before_close, STRIKES_PER_WINDOW as usize);
    }

    #[test]
    fn limiters_come_with_the_first_message_and_go_when_all_buckets_are_full() {
        let spec = spec(100, 1 << 20);
        let mut limits = RateLimits::new(256 * 1024);
        assert_eq!(limits.full_after(spec), None, "nothing before a message");
        limits.check(spec, 10).unwrap();
        assert!(limits.take_fresh() && !limits.take_fresh(), "made once");
        assert_eq!(limits.full_after(spec), Some(Duration::from_secs(2)), "bursts of twice the rate refill in 2 s");
        assert!(limits.relax(spec, Duration::from_secs(1)), "not yet full");
        assert!(!limits.relax(spec, Duration::from_secs(2)), "full: as good as new, so gone");
        // A strike keeps them for the whole strike window.
        limits.check(spec, 10).unwrap();
        limits.strike();
        assert_eq!(limits.full_after(spec), Some(STRIKE_WINDOW));
        assert!(limits.relax(spec, Duration::from_secs(5)));
        assert!(!limits.relax(spec, STRIKE_WINDOW));
        // A largest frame bigger than two seconds of bytes takes longer to refill.
        let slow = RateSpec { messages: 0, bytes: 1000 };
        let mut limits = RateLimits::new(10_000);
        limits.check(slow, 1).unwrap();
        assert_eq!(limits.full_after(slow), Some(Duration::from_secs(10)));
    }
}
