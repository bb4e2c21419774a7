//! Quiet hours: a daily window, local to the recipient, in which nothing is sent.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// `[start, end)` in local time; crosses midnight when `start > end` (22:00–08:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    start: NaiveTime,
    end: NaiveTime,
}

impl QuietHours {
    /// `None` when the window is empty (`start == end`).
    pub fn new(start: NaiveTime, end: NaiveTime) -> Option<Self> {
        (start != end).then_some(Self { start, end })
    }

    /// Parses `"22:00"`-style times.
    pub fn parse(start: &str, end: &str) -> Result<Option<Self>, String> {
        let t = |s: &str| {
            NaiveTime::parse_from_str(s.trim(), "%H:%M")
                .map_err(|_| format!("{s:?} is not a time of day as HH:MM"))
        };
        Ok(Self::new(t(start)?, t(end)?))
    }

    fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// When `at` falls in quiet hours in `tz`, the instant they end; else `None`.
    pub fn defer_until(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&tz);
        let t = local.time();
        if !self.contains(t) {
            return None;
        }
        let mut date = local.date_naive();
        if self.start > self.end && t >= self.start {
            date = date.succ_opt()?;
        }
        let mut end = date.and_time(self.end);
        // The end may fall in a DST gap (02:30 on a spring-forward night): the
        // window then ends at the first local time that exists after it.
        for _ in 0..(4 * 60) {
            match tz.from_local_datetime(&end) {
                chrono::LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
                chrono::LocalResult::Ambiguous(first, _) => return Some(first.with_timezone(&Utc)),
                chrono::LocalResult::None => end += Duration::minutes(1),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn night() -> QuietHours {
        QuietHours::parse("22:00", "08:00").unwrap().unwrap()
    }

    #[test]
    fn outside_quiet_hours_nothing_is_deferred() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 15:00 in New York (EST, UTC-5).
        assert_eq!(night().defer_until(utc("2026-01-15T20:00:00Z"), ny), None);
    }

    #[test]
    fn across_midnight_defers_to_the_next_morning() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 23:30 local on Jan 15 → 08:00 local on Jan 16 = 13:00Z.
        assert_eq!(
            night().defer_until(utc("2026-01-16T04:30:00Z"), ny),
            Some(utc("2026-01-16T13:00:00Z"))
        );
        // 03:00 local on Jan 16 → 08:00 the same day.
        assert_eq!(
            night().defer_until(utc("2026-01-16T08:00:00Z"), ny),
            Some(utc("2026-01-16T13:00:00Z"))
        );
    }

    #[test]
    fn a_window_within_one_day() {
        let q = QuietHours::parse("12:00", "14:00").unwrap().unwrap();
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        // 12:30 IST (UTC+5:30) → 14:00 IST = 08:30Z.
        assert_eq!(
            q.defer_until(utc("2026-03-01T07:00:00Z"), kolkata),
            Some(utc("2026-03-01T08:30:00Z"))
        );
        assert_eq!(q.defer_until(utc("2026-03-01T09:00:00Z"), kolkata), None);
    }

    #[test]
    fn dst_spring_forward_night() {
        // US clocks jump 02:00 → 03:00 on 2026-03-08. 23:00 EST on Mar 7 → 08:00 EDT on Mar 8 = 12:00Z.
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            night().defer_until(utc("2026-03-08T04:00:00Z"), ny),
            Some(utc("2026-03-08T12:00:00Z"))
        );
        // A window ending inside the gap ends when the clock resumes (03:00 EDT = 07:00Z).
        let q = QuietHours::parse("01:00", "02:30").unwrap().unwrap();
        assert_eq!(
            q.defer_until(utc("2026-03-08T06:30:00Z"), ny),
            Some(utc("2026-03-08T07:00:00Z"))
        );
    }

    #[test]
    fn dst_fall_back_night() {
        // London goes BST → GMT at 02:00 on 2026-10-25. 23:00 BST on Oct 24 (22:00Z) → 08:00 GMT = 08:00Z.
        let london: Tz = "Europe/London".parse().unwrap();
        assert_eq!(
            night().defer_until(utc("2026-10-24T22:00:00Z"), london),
            Some(utc("2026-10-25T08:00:00Z"))
        );
        // An end time that happens twice (01:30) ends at its first occurrence (00:30Z, still BST).
        let q = QuietHours::parse("00:00", "01:30").unwrap().unwrap();
        assert_eq!(
            q.defer_until(utc("2026-10-24T23:30:00Z"), london),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn southern_hemisphere_dst() {
        // Sydney leaves DST on 2026-04-05 at 03:00 AEDT → 02:00 AEST. 22:30 AEDT Apr 4 (11:30Z) → 08:00 AEST Apr 5 (22:00Z Apr 4).
        let sydney: Tz = "Australia/Sydney".parse().unwrap();
        assert_eq!(
            night().defer_until(utc("2026-04-04T11:30:00Z"), sydney),
            Some(utc("2026-04-04T22:00:00Z"))
        );
    }

    #[test]
    fn empty_and_malformed_windows() {
        assert_eq!(QuietHours::parse("08:00", "08:00").unwrap(), None);
        assert!(QuietHours::parse("25:00", "08:00").is_err());
    }
}
