//! When a wait must end: a point in time, or never.
//!
//! Every blocking call of mp takes a `Duration` timeout; turning it into a point in time with
//! `Instant::now() + timeout` panics for huge timeouts (`Duration::MAX`). [`Deadline`] is the
//! one place that conversion happens, and it saturates: a timeout too far away to be
//! represented is no deadline at all ("wait for ever"), on every platform.

use std::time::{Duration, Instant};

/// A point in time by which a wait ends, or [`Deadline::NEVER`].
///
/// ```
/// use std::time::Duration;
/// use mp_ipc::deadline::Deadline;
///
/// let soon = Deadline::after(Duration::from_secs(5));
/// assert!(!soon.expired());
/// assert!(soon.remaining().unwrap() <= Duration::from_secs(5));
///
/// // Far beyond what an `Instant` can hold: no deadline, not a panic.
/// let never = Deadline::after(Duration::MAX);
/// assert_eq!(never, Deadline::NEVER);
/// assert_eq!(never.remaining(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: wait for ever.
    pub const NEVER: Deadline = Deadline(None);

    /// `timeout` from now; [`NEVER`](Self::NEVER) if that instant cannot be represented.
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now().checked_add(timeout))
    }

    /// `timeout` from now, `None` meaning for ever (the form most mp calls take).
    pub fn from_timeout(timeout: Option<Duration>) -> Self {
        timeout.map_or(Self::NEVER, Self::after)
    }

    /// The deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Deadline(Some(instant))
    }

    /// The instant, or `None` for no deadline.
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// Time left (zero once passed), or `None` for no deadline: the `Option<Duration>`
    /// timeout form, to hand to a call that waits.
    pub fn remaining(self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Time left, but never more than `cap` (for waits that wake now and then to look
    /// around, such as liveness checks).
    pub fn remaining_capped(self, cap: Duration) -> Duration {
        self.remaining().map_or(cap, |left| left.min(cap))
    }

    /// Whether the deadline has passed (never, for [`NEVER`](Self::NEVER)).
    pub fn expired(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (Some(a), None) | (None, Some(a)) => Deadline(Some(a)),
            (None, None) => Deadline::NEVER,
        }
    }
}

impl From<Option<Duration>> for Deadline {
    fn from(timeout: Option<Duration>) -> Self {
        Self::from_timeout(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_saturate_to_never() {
        assert_eq!(Deadline::after(Duration::MAX), Deadline::NEVER);
        assert_eq!(Deadline::from_timeout(Some(Duration::MAX)), Deadline::NEVER);
        assert_eq!(Deadline::from_timeout(None), Deadline::NEVER);
        assert!(!Deadline::NEVER.expired());
        assert_eq!(
            Deadline::NEVER.remaining_capped(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_zero_timeout_is_already_expired() {
        let d = Deadline::after(Duration::ZERO);
        assert!(d.expired());
        assert_eq!(d.remaining(), Some(Duration::ZERO));
    }

    #[test]
    fn min_prefers_the_earlier_deadline() {
        let near = Deadline::after(Duration::from_secs(1));
        let far = Deadline::after(Duration::from_secs(100));
        assert_eq!(near.min(far), near);
        assert_eq!(far.min(near), near);
        assert_eq!(Deadline::NEVER.min(near), near);
        assert_eq!(near.min(Deadline::NEVER), near);
    }
}
