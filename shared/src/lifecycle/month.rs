//! `Month`: one calendar month in UTC, the unit a partition holds, an archive
//! object holds and a retention counts in.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// A calendar month in UTC (`2026-12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// Months since year 0, so that ordering and arithmetic are plain integers.
    index: i32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a month: write it as YYYY-MM, e.g. 2026-01")]
pub struct MonthError(String);

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Self> {
        (1..=12).contains(&month).then(|| Self {
            index: year * 12 + month as i32 - 1,
        })
    }

    /// The month an instant falls in.
    pub fn of(at: DateTime<Utc>) -> Self {
        Self::new(at.year(), at.month()).expect("chrono months are 1..=12")
    }

    pub fn year(self) -> i32 {
        self.index.div_euclid(12)
    }

    /// 1 to 12.
    pub fn month(self) -> u32 {
        self.index.rem_euclid(12) as u32 + 1
    }

    /// `n` months later (earlier when negative).
    pub fn plus(self, n: i32) -> Self {
        Self {
            index: self.index + n,
        }
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year(), self.month(), 1).expect("a month's first day exists")
    }

    /// Its first instant: a partition's inclusive lower bound.
    pub fn start(self) -> DateTime<Utc> {
        Utc.from_utc_datetime(
            &self
                .first_day()
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists"),
        )
    }

    /// The next month's first instant: a partition's exclusive upper bound.
    pub fn end(self) -> DateTime<Utc> {
        self.plus(1).start()
    }

    /// The months from `self` to `last`, both included (none when `last` is earlier).
    pub fn through(self, last: Month) -> impl Iterator<Item = Month> {
        (self.index..=last.index).map(|index| Month { index })
    }

    /// The suffix of its partition's name: `y2026m12`.
    pub fn partition_suffix(self) -> String {
        format!("y{:04}m{:02}", self.year(), self.month())
    }

    /// Reads a partition's suffix back (`y2026m12`); `None` for any other name.
    pub fn from_partition_suffix(suffix: &str) -> Option<Self> {
        let rest = suffix.strip_prefix('y')?;
        let (year, month) = rest.split_once('m')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        Self::new(year.parse().ok()?, month.parse().ok()?)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

impl FromStr for Month {
    type Err = MonthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MonthError(s.to_owned());
        let (year, month) = s.split_once('-').ok_or_else(bad)?;
        if year.len() != 4
            || month.len() != 2
            || !year
                .bytes()
                .chain(month.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        Self::new(
            year.parse().map_err(|_| bad())?,
            month.parse().map_err(|_| bad())?,
        )
        .ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_step_across_years_both_ways() {
        let dec = Month::new(2026, 12).unwrap();
        assert_eq!(dec.plus(1).to_string(), "2027-01");
        assert_eq!(dec.plus(-12).to_string(), "2025-12");
        assert_eq!(Month::new(2027, 1).unwrap().plus(-1), dec);
        assert_eq!(dec.plus(-25).to_string(), "2024-11");
    }

    #[test]
    fn a_month_is_the_half_open_range_of_its_instants() {
        let dec = Month::new(2026, 12).unwrap();
        assert_eq!(dec.start().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(dec.end().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert_eq!(Month::of(dec.end() - chrono::Duration::nanoseconds(1)), dec);
        assert_eq!(Month::of(dec.end()), dec.plus(1));
    }

    #[test]
    fn through_lists_every_month_once() {
        let nov = Month::new(2026, 11).unwrap();
        let listed: Vec<String> = nov.through(nov.plus(3)).map(|m| m.to_string()).collect();
        assert_eq!(listed, ["2026-11", "2026-12", "2027-01", "2027-02"]);
        assert_eq!(nov.through(nov.plus(-1)).count(), 0);
    }

    #[test]
    fn a_month_is_read_only_as_yyyy_mm() {
        assert_eq!("2026-01".parse::<Month>(), Ok(Month::new(2026, 1).unwrap()));
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-01",
            "2026/01",
            "",
            "2026-01-01",
            "２０２６-01",
        ] {
            let err = bad.parse::<Month>().unwrap_err();
            assert!(err.to_string().contains("YYYY-MM"), "{bad}: {err}");
        }
    }

    #[test]
    fn partition_suffixes_round_trip_and_nothing_else_reads_as_one() {
        let m = Month::new(2027, 3).unwrap();
        assert_eq!(m.partition_suffix(), "y2027m03");
        assert_eq!(Month::from_partition_suffix("y2027m03"), Some(m));
        for other in ["default", "y2027m3", "y2027m13", "2027m03", "y2027"] {
            assert_eq!(Month::from_partition_suffix(other), None, "{other}");
        }
    }
}
