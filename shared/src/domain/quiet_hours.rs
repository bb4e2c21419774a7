//! Quiet hours: a daily window, local to the recipient, in which nothing is sent.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Why an operator's quiet hours were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuietHoursError {
    #[error("{0:?} is not a time of day as HH:MM (00:00 to 23:59)")]
    Start(String),
    #[error("{0:?} is not a time of day as HH:MM (00:00 to 23:59)")]
    End(String),
    #[error("quiet hours from {0} to {0} are empty: give two different times, or none")]
    Empty(String),
}

/// `HH:MM` exactly: two digits each, hour below 24.
fn parse_hh_mm(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    let digit = |i: usize| {
        b.get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| u32::from(c - b'0'))
    };
    if b.len() != 5 || b[2] != b':' {
        return None;
    }
    let hour = digit(0)? * 10 + digit(1)?;
    let minute = digit(3)? * 10 + digit(4)?;
    NaiveTime::from_hms_opt(hour, minute, 0)
}

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

    /// Parses an operator's window, `HH:MM` each (two digits, 00:00 to
    /// 23:59, nothing around them). Refuses an empty window (`start == end`):
    /// an operator who wrote one meant something, and it is not "none".
    pub fn parse(start: &str, end: &str) -> Result<Self, QuietHoursError> {
        let start = parse_hh_mm(start).ok_or_else(|| QuietHoursError::Start(start.to_owned()))?;
        let end = parse_hh_mm(end).ok_or_else(|| QuietHoursError::End(end.to_owned()))?;
        Self::new(start, end)
            .ok_or_else(|| QuietHoursError::Empty(start.format("%H:%M").to_string()))
    }

    pub fn start(&self) -> NaiveTime {
        self.start
    }

    pub fn end(&self) -> NaiveTime {
        self.end
    }

    fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// When `at` falls in quiet hours in `tz`, the instant they end; else `None`.
    ///
    /// The end is always after `at` and outside the window in local time. Across a
    /// clock change the local end time may happen twice or not at all:
    /// - twice (fall back, e.g. 01:30 on a night London repeats 01:00–02:00): the
    ///   first occurrence that is later than `at`, so a message deferred during the
    ///   repeated hour is not deferred into the past;
    /// - not at all (spring forward, 02:30 on a night New York skips 02:00–03:00):
    ///   the first instant after the gap, when the clock resumes.
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
        // A gap may swallow the whole time outside a long window (00:15–00:00 on a
        // night whose clock jumps 00:00 → 01:00): the window then runs on to the
        // end of the next day's.
        for _ in 0..2 {
            let until = first_instant_after(tz, date.and_time(self.end), at)?;
            if !self.contains(until.with_timezone(&tz).time()) {
                return Some(until);
            }
            date = date.succ_opt()?;
        }
        None
    }
}

/// The first instant later than `after` whose local time in `tz` is `local`,
/// or the first instant after the gap when `local` does not exist that day.
fn first_instant_after(
    tz: Tz,
    local: chrono::NaiveDateTime,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut local = local;
    // Gaps are whole minutes and at most a few hours long.
    for _ in 0..(4 * 60) {
        match tz.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
            chrono::LocalResult::Ambiguous(first, second) => {
                let first = first.with_timezone(&Utc);
                return Some(if first > after {
                    first
                } else {
                    second.with_timezone(&Utc)
                });
            }
            chrono::LocalResult::None => local += Duration::minutes(1),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn night() -> QuietHours {
        QuietHours::parse("22:00", "08:00").unwrap()
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
        let q = QuietHours::parse("12:00", "14:00").unwrap();
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
        let q = QuietHours::parse("01:00", "02:30").unwrap();
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
        // An end time that happens twice (01:30), seen from before it: its first occurrence (00:30Z, still BST).
        let q = QuietHours::parse("00:00", "01:30").unwrap();
        assert_eq!(
            q.defer_until(utc("2026-10-24T23:30:00Z"), london),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn london_fall_back_during_the_repeated_hour_ends_at_the_second_occurrence() {
        // 01:15Z is 01:15 GMT, the second pass of London's repeated hour: the first
        // 01:30 (00:30Z) is already past, so the window ends at the second (01:30Z).
        let london: Tz = "Europe/London".parse().unwrap();
        let q = QuietHours::parse("00:00", "01:30").unwrap();
        let now = utc("2026-10-25T01:15:00Z");
        assert_eq!(
            q.defer_until(now, london),
            Some(utc("2026-10-25T01:30:00Z"))
        );
    }

    #[test]
    fn new_york_fall_back_during_the_repeated_hour_ends_at_the_second_occurrence() {
        // New York repeats 01:00–02:00 on 2026-11-01: 06:10Z is 01:10 EST (second pass).
        let ny: Tz = "America/New_York".parse().unwrap();
        let q = QuietHours::parse("22:00", "01:30").unwrap();
        let now = utc("2026-11-01T06:10:00Z");
        assert_eq!(q.defer_until(now, ny), Some(utc("2026-11-01T06:30:00Z")));
        // The first pass (05:10Z = 01:10 EDT) ends at the first 01:30 (05:30Z).
        assert_eq!(
            q.defer_until(utc("2026-11-01T05:10:00Z"), ny),
            Some(utc("2026-11-01T05:30:00Z"))
        );
    }

    #[test]
    fn london_spring_forward_end_in_the_gap_ends_when_the_clock_resumes() {
        // London skips 01:00–02:00 on 2026-03-29: 00:30Z is 00:30 GMT; 01:30 does not
        // exist, so the window ends at 02:00 BST = 01:00Z.
        let london: Tz = "Europe/London".parse().unwrap();
        let q = QuietHours::parse("00:00", "01:30").unwrap();
        assert_eq!(
            q.defer_until(utc("2026-03-29T00:30:00Z"), london),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn new_york_spring_forward_end_in_the_gap_ends_when_the_clock_resumes() {
        // New York skips 02:00–03:00 on 2026-03-08: 06:30Z is 01:30 EST; 02:30 does not
        // exist, so the window ends at 03:00 EDT = 07:00Z.
        let ny: Tz = "America/New_York".parse().unwrap();
        let q = QuietHours::parse("01:00", "02:30").unwrap();
        assert_eq!(
            q.defer_until(utc("2026-03-08T06:30:00Z"), ny),
            Some(utc("2026-03-08T07:00:00Z"))
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
        assert_eq!(
            QuietHours::parse("08:00", "08:00"),
            Err(QuietHoursError::Empty("08:00".into()))
        );
        for bad in [
            "8:00", " 08:00", "08:00 ", "24:00", "12:60", "12-00", "1200", "ab:cd", "",
        ] {
            assert_eq!(
                QuietHours::parse(bad, "08:00"),
                Err(QuietHoursError::Start(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            QuietHours::parse("23:59", "00:00").map(|q| (q.start(), q.end())),
            Ok((NaiveTime::from_hms_opt(23, 59, 0).unwrap(), NaiveTime::MIN))
        );
        assert!(QuietHours::parse("25:00", "08:00").is_err());
    }

    /// Every clock change in 2026–2027 of every IANA zone, found by scanning each
    /// zone's UTC offset day by day and narrowing to the minute.
    fn transitions() -> &'static [(Tz, DateTime<Utc>)] {
        use chrono::Offset;
        use std::sync::OnceLock;
        static ALL: OnceLock<Vec<(Tz, DateTime<Utc>)>> = OnceLock::new();
        ALL.get_or_init(|| {
            let offset =
                |tz: Tz, at: DateTime<Utc>| tz.offset_from_utc_datetime(&at.naive_utc()).fix();
            let start = utc("2026-01-01T00:00:00Z");
            let mut found = vec![];
            for tz in chrono_tz::TZ_VARIANTS {
                for day in 0..730 {
                    let lo = start + Duration::days(day);
                    let (mut lo, mut hi) = (lo.timestamp(), (lo + Duration::days(1)).timestamp());
                    let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
                    if offset(tz, at(lo)) == offset(tz, at(hi)) {
                        continue;
                    }
                    while hi - lo > 1 {
                        let mid = lo + (hi - lo) / 2;
                        if offset(tz, at(mid)) == offset(tz, at(lo)) {
                            lo = mid
                        } else {
                            hi = mid
                        }
                    }
                    let hi = at(hi);
                    found.push((tz, hi));
                }
            }
            found
        })
    }

    #[test]
    fn the_scan_finds_the_known_clock_changes() {
        let london: Tz = "Europe/London".parse().unwrap();
        let found: Vec<_> = transitions()
            .iter()
            .filter(|(tz, _)| *tz == london)
            .map(|(_, t)| *t)
            .collect();
        assert!(found.contains(&utc("2026-03-29T01:00:00Z")), "{found:?}");
        assert!(found.contains(&utc("2026-10-25T01:00:00Z")), "{found:?}");
        assert!(transitions().len() > 300, "{}", transitions().len());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        #[test]
        fn the_end_is_after_now_within_a_day_and_outside_the_window(
            which in proptest::prelude::any::<proptest::sample::Index>(),
            around_min in -(26 * 60i64)..(26 * 60),
            around_s in 0i64..60,
            start_min in 0u32..(24 * 60),
            end_min in 0u32..(24 * 60),
            // Windows on the quarter hour are the common case; any minute is allowed.
            quarter in proptest::prelude::any::<bool>(),
        ) {
            let (start_min, end_min) = if quarter { (start_min / 15 * 15, end_min / 15 * 15) } else { (start_min, end_min) };
            let time = |m: u32| NaiveTime::from_hms_opt(m / 60, m % 60, 0).unwrap();
            let Some(q) = QuietHours::new(time(start_min), time(end_min)) else { return Ok(()) };
            let (tz, transition) = *which.get(transitions());
            let now = transition + Duration::minutes(around_min) + Duration::seconds(around_s);
            match q.defer_until(now, tz) {
                None => proptest::prop_assert!(!q.contains(now.with_timezone(&tz).time())),
                Some(until) => {
                    proptest::prop_assert!(until > now, "{tz} {now} → {until}");
                    // Within a day and the hour a clock change adds, unless a gap
                    // swallowed all the time outside a nearly day-long window.
                    let outside_min = (i64::from(start_min) - i64::from(end_min)).rem_euclid(24 * 60);
                    let bound = if outside_min > 120 { Duration::hours(25) } else { Duration::hours(49) };
                    proptest::prop_assert!(until - now <= bound, "{tz} {now} → {until}");
                    let local = until.with_timezone(&tz).time();
                    proptest::prop_assert!(!q.contains(local), "{tz} {now} → {until} ({local} local)");
                }
            }
        }
    }
}
