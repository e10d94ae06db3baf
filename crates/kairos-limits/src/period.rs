//! Budget periods and the UTC civil-calendar maths behind them.
//!
//! The Redis scripts compute the current period **inside Lua from Redis `TIME`** (see
//! `lua/prelude.lua`), so that a replica with a skewed clock can never open a new period early.
//! The functions here are the Rust twins of those Lua functions, line for line (floor division
//! everywhere, Howard Hinnant's `days_from_civil` / `civil_from_days`). They are used by the
//! in-process budget store and by the tests that check the Lua against them.

use std::fmt;
use std::str::FromStr;

/// Seconds in a UTC day (no leap seconds: unix time has none).
pub const SECONDS_PER_DAY: i64 = 86_400;

/// The accounting period of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// A UTC calendar day, `[00:00:00, 24:00:00)`.
    Day,
    /// A UTC calendar month, from the 1st at 00:00:00 to the 1st of the next month.
    Month,
    /// The whole life of the scope: one period that never ends.
    Lifetime,
}

impl Period {
    /// The name used in Redis keys and in configuration: `day`, `month` or `lifetime`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Lifetime => "lifetime",
        }
    }

    /// The period containing `unix_s` (seconds since the unix epoch, UTC).
    #[must_use]
    pub fn bounds_at(self, unix_s: i64) -> PeriodBounds {
        match self {
            Self::Day => {
                let id = unix_s.div_euclid(SECONDS_PER_DAY);
                PeriodBounds {
                    id,
                    start_unix_s: id * SECONDS_PER_DAY,
                    end_unix_s: Some((id + 1) * SECONDS_PER_DAY),
                }
            }
            Self::Month => {
                let (y, m, _) = civil_from_days(unix_s.div_euclid(SECONDS_PER_DAY));
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                PeriodBounds {
                    id: y * 12 + i64::from(m) - 1,
                    start_unix_s: days_from_civil(y, m, 1) * SECONDS_PER_DAY,
                    end_unix_s: Some(days_from_civil(ny, nm, 1) * SECONDS_PER_DAY),
                }
            }
            Self::Lifetime => PeriodBounds {
                id: 0,
                start_unix_s: 0,
                end_unix_s: None,
            },
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`Period::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown budget period {0:?}: expected day, month or lifetime")]
pub struct UnknownPeriod(pub String);

impl FromStr for Period {
    type Err = UnknownPeriod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            "lifetime" => Ok(Self::Lifetime),
            other => Err(UnknownPeriod(other.to_owned())),
        }
    }
}

/// One concrete period: its id and its bounds in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeriodBounds {
    /// `day`: days since the epoch; `month`: `year * 12 + month - 1`; `lifetime`: 0.
    pub id: i64,
    /// First second of the period (inclusive); 0 for `lifetime`.
    pub start_unix_s: i64,
    /// First second after the period (exclusive); `None` for `lifetime`.
    pub end_unix_s: Option<i64>,
}

/// `(year, month 1..=12, day 1..=31)` of the given day number (days since 1970-01-01).
///
/// Howard Hinnant's algorithm with floor division; mirrored by `civil_from_days` in
/// `lua/prelude.lua`.
#[must_use]
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is in 1..=31 and m in 1..=12 by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Days since 1970-01-01 of the civil date `year-month-day` (month 1..=12).
///
/// Mirrored by `days_from_civil` in `lua/prelude.lua`.
#[must_use]
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let m = i64::from(month);
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(y: i64, m: u32, d: u32, hh: i64, mm: i64, ss: i64) -> i64 {
        days_from_civil(y, m, d) * SECONDS_PER_DAY + hh * 3600 + mm * 60 + ss
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // `date -u -d 2000-03-01 +%s` = 951868800
        assert_eq!(days_from_civil(2000, 3, 1) * SECONDS_PER_DAY, 951_868_800);
        // `date -u -d 2024-02-29 +%s` = 1709164800
        assert_eq!(
            days_from_civil(2024, 2, 29) * SECONDS_PER_DAY,
            1_709_164_800
        );
        assert_eq!(
            civil_from_days(1_709_164_800 / SECONDS_PER_DAY),
            (2024, 2, 29)
        );
        // `date -u -d 2100-03-01 +%s` = 4107542400 (2100 is not a leap year)
        assert_eq!(days_from_civil(2100, 3, 1) * SECONDS_PER_DAY, 4_107_542_400);
        assert_eq!(
            civil_from_days(4_107_542_400 / SECONDS_PER_DAY - 1),
            (2100, 2, 28)
        );
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn civil_round_trip_and_continuity_over_five_centuries() {
        let mut prev = civil_from_days(-1);
        for day in 0..(days_from_civil(2470, 1, 1)) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "round trip of day {day}");
            let (py, pm, pd) = prev;
            let continues = (y == py && m == pm && d == pd + 1)
                || (d == 1 && ((y == py && m == pm + 1) || (y == py + 1 && m == 1 && pm == 12)));
            assert!(continues, "{prev:?} -> {:?}", (y, m, d));
            prev = (y, m, d);
        }
    }

    #[test]
    fn day_bounds() {
        let t = ts(2025, 7, 14, 23, 59, 59);
        let b = Period::Day.bounds_at(t);
        assert_eq!(b.start_unix_s, ts(2025, 7, 14, 0, 0, 0));
        assert_eq!(b.end_unix_s, Some(ts(2025, 7, 15, 0, 0, 0)));
        assert_eq!(b.id, t / SECONDS_PER_DAY);
        let next = Period::Day.bounds_at(t + 1);
        assert_eq!(next.id, b.id + 1);
        assert_eq!(next.start_unix_s, t + 1);
    }

    #[test]
    fn month_bounds_and_rollover() {
        let cases = [
            // (instant, expected start, expected end)
            (
                ts(2024, 2, 29, 23, 59, 59),
                ts(2024, 2, 1, 0, 0, 0),
                ts(2024, 3, 1, 0, 0, 0),
            ),
            (
                ts(2024, 3, 1, 0, 0, 0),
                ts(2024, 3, 1, 0, 0, 0),
                ts(2024, 4, 1, 0, 0, 0),
            ),
            (
                ts(2023, 2, 28, 12, 0, 0),
                ts(2023, 2, 1, 0, 0, 0),
                ts(2023, 3, 1, 0, 0, 0),
            ),
            (
                ts(2025, 12, 31, 23, 59, 59),
                ts(2025, 12, 1, 0, 0, 0),
                ts(2026, 1, 1, 0, 0, 0),
            ),
            (
                ts(2026, 1, 1, 0, 0, 0),
                ts(2026, 1, 1, 0, 0, 0),
                ts(2026, 2, 1, 0, 0, 0),
            ),
        ];
        for (t, start, end) in cases {
            let b = Period::Month.bounds_at(t);
            assert_eq!((b.start_unix_s, b.end_unix_s), (start, Some(end)), "at {t}");
        }
        let dec = Period::Month.bounds_at(ts(2025, 12, 31, 23, 59, 59));
        let jan = Period::Month.bounds_at(ts(2026, 1, 1, 0, 0, 0));
        assert_eq!(dec.id, 2025 * 12 + 11);
        assert_eq!(jan.id, dec.id + 1);
    }

    #[test]
    fn month_bounds_contain_every_hour_for_a_decade() {
        let mut t = ts(2020, 1, 1, 0, 30, 0);
        let end = ts(2031, 1, 1, 0, 0, 0);
        let mut prev = Period::Month.bounds_at(t);
        while t < end {
            let b = Period::Month.bounds_at(t);
            assert!(b.start_unix_s <= t && Some(t) < b.end_unix_s);
            if b.id != prev.id {
                assert_eq!(b.id, prev.id + 1);
                assert_eq!(Some(b.start_unix_s), prev.end_unix_s);
            }
            prev = b;
            t += 3600;
        }
    }

    #[test]
    fn lifetime_is_one_period() {
        for t in [0, 1, 1_700_000_000, 4_000_000_000] {
            let b = Period::Lifetime.bounds_at(t);
            assert_eq!((b.id, b.start_unix_s, b.end_unix_s), (0, 0, None));
        }
    }

    #[test]
    fn period_names_round_trip() {
        for p in [Period::Day, Period::Month, Period::Lifetime] {
            assert_eq!(p.as_str().parse::<Period>(), Ok(p));
        }
        assert!("week".parse::<Period>().is_err());
    }
}
