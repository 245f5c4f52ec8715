//! Five-field cron expressions (`minute hour day month weekday`, UTC), as
//! Hightouch and crontab(5) write them: each field is `*` or a
//! comma-separated list of `n`, `a-b`, `*/s` and `a-b/s`.

/// A parsed cron expression: the minutes, hours, days, months and weekdays
/// it fires on, one bit per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronSchedule {
    /// Bit n set: fires in minute n (0 to 59).
    pub minutes: u64,
    /// Bit n set: fires in hour n (0 to 23).
    pub hours: u32,
    /// Bit n set: fires on day of month n (1 to 31).
    pub days: u32,
    /// Bit n set: fires in month n (1 to 12).
    pub months: u16,
    /// Bit n set: fires on weekday n (0 = Sunday to 6; 7 is read as 0).
    pub weekdays: u8,
    /// Whether the day field was `*` (crontab fires on either field
    /// matching when both are restricted).
    pub any_day: bool,
    /// Whether the weekday field was `*`.
    pub any_weekday: bool,
}

impl CronSchedule {
    /// Parses `text`; the error says which field is wrong and how.
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "`{text}` has {} fields; write five: minute hour day month weekday, e.g. \"0 * * * *\"",
                fields.len()
            ));
        };
        let mut weekdays = field("weekday", weekday, 0, 7)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(CronSchedule {
            minutes: field("minute", minute, 0, 59)?,
            hours: field("hour", hour, 0, 23)? as u32,
            days: field("day", day, 1, 31)? as u32,
            months: field("month", month, 1, 12)? as u16,
            weekdays: weekdays as u8,
            any_day: day == "*",
            any_weekday: weekday == "*",
        })
    }
}

impl CronSchedule {
    /// Whether the expression fires in the minute starting at `minute`
    /// (UTC). When both the day and the weekday are restricted, either
    /// matching fires, as crontab(5) says.
    pub fn fires_at(&self, minute: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        let bit = |set: u64, n: u32| set & (1u64 << n) != 0;
        let day = bit(u64::from(self.days), minute.day());
        let weekday = bit(
            u64::from(self.weekdays),
            minute.weekday().num_days_from_sunday(),
        );
        let day_matches = match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => weekday,
            (false, true) => day,
            (false, false) => day || weekday,
        };
        bit(self.minutes, minute.minute())
            && bit(u64::from(self.hours), minute.hour())
            && bit(u64::from(self.months), minute.month())
            && day_matches
    }
}

/// One field as a bit set of the values in `min..=max` it names.
fn field(name: &str, text: &str, min: u32, max: u32) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("the {name} field `{text}` {why}; use *, n, a-b, */s or a-b/s with values {min} to {max}")
    };
    let number = |s: &str| -> Result<u32, String> {
        let n: u32 = s.parse().map_err(|_| bad("is not a number list"))?;
        if n < min || n > max {
            return Err(bad("is out of range"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| bad("has a bad step"))?;
                if step == 0 {
                    return Err(bad("has a step of 0"));
                }
                (range, step)
            }
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(bad("has a range that runs backwards"));
            }
            (a, b)
        } else {
            let n = number(range)?;
            if step != 1 {
                (n, max)
            } else {
                (n, n)
            }
        };
        let mut v = from;
        while v <= to {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_and_stepped_expressions_parse() {
        let hourly = CronSchedule::parse("0 * * * *").unwrap();
        assert_eq!(hourly.minutes, 1);
        assert_eq!(hourly.hours, (1 << 24) - 1);
        let s = CronSchedule::parse("*/15 9-17 1,15 */3 1-5").unwrap();
        assert_eq!(s.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(s.hours, ((1 << 18) - 1) & !((1 << 9) - 1));
        assert_eq!(s.days, 1 << 1 | 1 << 15);
        assert_eq!(s.months, 1 << 1 | 1 << 4 | 1 << 7 | 1 << 10);
        assert_eq!(s.weekdays, 0b0011_1110);
        assert!(!s.any_day && !s.any_weekday);
    }

    #[test]
    fn it_fires_on_the_minutes_it_names() {
        let at = |text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let hourly = CronSchedule::parse("0 * * * *").unwrap();
        assert!(hourly.fires_at(at("2026-12-02T17:00:00Z")));
        assert!(!hourly.fires_at(at("2026-12-02T17:01:00Z")));
        // 2026-12-02 is a Wednesday (weekday 3).
        let wednesdays = CronSchedule::parse("30 9 * * 3").unwrap();
        assert!(wednesdays.fires_at(at("2026-12-02T09:30:00Z")));
        assert!(!wednesdays.fires_at(at("2026-12-03T09:30:00Z")));
        // Day and weekday both restricted: either fires.
        let either = CronSchedule::parse("0 0 1 * 3").unwrap();
        assert!(either.fires_at(at("2026-12-02T00:00:00Z")));
        assert!(either.fires_at(at("2027-01-01T00:00:00Z")));
        assert!(!either.fires_at(at("2026-12-03T00:00:00Z")));
    }

    #[test]
    fn sunday_may_be_written_as_seven() {
        assert_eq!(CronSchedule::parse("0 0 * * 7").unwrap().weekdays, 1);
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (text, needle) in [
            ("0 * * *", "4 fields"),
            ("60 * * * *", "minute field"),
            ("0 24 * * *", "hour field"),
            ("0 0 0 * *", "day field"),
            ("0 0 * 13 *", "month field"),
            ("0 0 * * 8", "weekday field"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "backwards"),
            ("0 0 * jan *", "month field"),
        ] {
            let err = CronSchedule::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
