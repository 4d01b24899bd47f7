//! Schedules: cron in an IANA time zone (croner on jiff), or a fixed rate; the ticks
//! they produce, daylight saving time included.
//!
//! DST follows croner's (OCPS) rules, which match what people expect of cron:
//! - a wall-clock time that does not exist (spring forward) runs at the first instant
//!   after the gap: a 02:30 daily job runs at 03:00 that day, once;
//! - a wall-clock time that happens twice (fall back) runs once, at the first of the two,
//!   for a job pinned to a time of day; a job over every hour (`0 * * * *`) runs in both
//!   real hours, as the hour does pass twice.
//!
//! Ticks are instants (UTC), so a claim key never depends on a zone's offset.

use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

/// A validated schedule: build one with [`Schedule::cron`] or [`Schedule::every`], which
/// check it. Kinds may be added: a `match` needs a `_` arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Schedule {
    /// A cron expression (5 fields, or 6 with seconds first) in a time zone.
    Cron {
        /// The expression, its fields separated by one space.
        expr: String,
        /// The time zone's IANA name, as given.
        tz_name: String,
        /// The time zone.
        tz: TimeZone,
        /// The parsed expression.
        cron: Box<Cron>,
    },
    /// Every `every`, on multiples of it since the Unix epoch (UTC): `15m` ticks at :00,
    /// :15, :30 and :45 whatever the zone or the moment the plan was registered.
    Every {
        /// The interval (at least 1 s).
        every: Duration,
    },
}

/// What is wrong with a cron schedule: its expression, its time zone, or both (each is
/// checked whatever the other is), in words that say how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", [.cron.as_ref().map(|c| format!("cron: {c}")), .timezone.as_ref().map(|t| format!("timezone: {t}"))].into_iter().flatten().collect::<Vec<_>>().join("; "))]
pub struct CronError {
    /// What is wrong with the expression.
    pub cron: Option<String>,
    /// What is wrong with the time zone.
    pub timezone: Option<String>,
}

/// How a cron expression is wrong, in words that say how to fix it.
pub(crate) fn parse_cron(expr: &str) -> Result<Cron, String> {
    let trimmed = expr.trim();
    let fields = trimmed.split_whitespace().count();
    let nickname = trimmed.starts_with('@');
    if !nickname && fields != 5 && fields != 6 {
        return Err(format!(
            "{expr:?} has {fields} fields; give 5 (minute hour day-of-month month day-of-week, e.g. \"0 * * * *\" for every hour) or 6 (seconds first, e.g. \"0 0 * * * *\")"
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| {
            format!(
                "{expr:?} does not parse: {e}; fields are minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC), day of week (0-7 or SUN-SAT), with `*`, `,`, `-` and `/`, e.g. \"30 2 * * *\" for 02:30 every day"
            )
        })?;
    match never_matches(&cron) {
        Some(why) => Err(format!(
            "cron expression {expr:?} never fires: {why}; give each field at least one value that can occur, e.g. \"0 0 28 2 *\" rather than \"0 0 30 2 *\""
        )),
        None => Ok(cron),
    }
}

/// Why a parsed expression matches no instant at all, if it does not: a time field
/// left without values (croner takes `,` as an empty list), or day-of-month, month and
/// day-of-week fields that no date meets (February 30th). croner would search every
/// such schedule up to the year 5000, for seconds, at each question asked of it.
fn never_matches(cron: &Cron) -> Option<&'static str> {
    let p = &cron.pattern;
    let none = |n: u32, matches: &dyn Fn(u32) -> Result<bool, croner::errors::CronError>| {
        !(0..n).any(|v| matches(v).unwrap_or(false))
    };
    if none(60, &|s| p.second_match(s)) {
        return Some("its seconds field matches no second");
    }
    if none(60, &|m| p.minute_match(m)) {
        return Some("its minute field matches no minute");
    }
    if none(24, &|h| p.hour_match(h)) {
        return Some("its hour field matches no hour");
    }
    // The Gregorian calendar repeats itself, weekdays included, every 400 years
    // (146,097 days, 20,871 weeks): a date that matches exists in 2000-2399 or nowhere.
    let mut first = Weekday::Saturday; // 2000-01-01
    for year in 2000..2400 {
        for month in 1..=12u32 {
            let length = jiff::civil::date(year as i16, month as i8, 1).days_in_month() as u32;
            if p.month_match(month).unwrap_or(false) {
                for day in 1..=length {
                    if p.day_match(year, month, day, first.shift(day as i32 - 1)).unwrap_or(false) {
                        return None;
                    }
                }
            }
            first = first.shift(length as i32);
        }
    }
    Some("no date matches its day-of-month, month and day-of-week fields together")
}

pub(crate) fn parse_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("{name:?} is not a known time zone (an IANA name); use one such as \"America/New_York\", \"Europe/Berlin\" or \"UTC\"")
    })
}

/// Parses a duration such as `15m`, `1h 30m`, `90s` or `PT1H`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: SignedDuration = text.trim().parse().map_err(|e| {
        format!("duration {text:?} does not parse ({e}); write it like \"15m\", \"1h\", \"1h 30m\" or \"90s\"")
    })?;
    if d <= SignedDuration::ZERO {
        return Err(format!("duration {text:?} must be positive"));
    }
    Duration::try_from(d).map_err(|e| format!("duration {text:?}: {e}"))
}

/// Prints a duration the way plan files write one (`30s`, `15m`, `1h30m`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let parts: Vec<String> = [(s / 86_400, "d"), (s / 3600 % 24, "h"), (s / 60 % 60, "m"), (s % 60, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if parts.is_empty() { format!("{}ms", d.as_millis()) } else { parts.join(" ") }
}

impl Schedule {
    /// A cron schedule; the error says what is wrong with the expression and with the
    /// time zone, both checked.
    pub fn cron(expr: &str, tz_name: &str) -> Result<Schedule, CronError> {
        let (cron, tz) = match (parse_cron(expr), parse_zone(tz_name)) {
            (Ok(cron), Ok(tz)) => (cron, tz),
            (cron, tz) => return Err(CronError { cron: cron.err(), timezone: tz.err() }),
        };
        Ok(Schedule::Cron {
            expr: expr.split_whitespace().collect::<Vec<_>>().join(" "),
            tz_name: tz_name.to_owned(),
            tz,
            cron: Box::new(cron),
        })
    }

    /// A fixed rate of at least 1 s; the error says why an interval is refused.
    pub fn every(every: Duration) -> Result<Schedule, String> {
        if every < Duration::from_secs(1) {
            return Err(format!("`every` must be at least 1s, not {}ms", every.as_millis()));
        }
        Ok(Schedule::Every { every })
    }

    /// The zone ticks are shown in: the cron's, or UTC for a fixed rate.
    pub fn time_zone(&self) -> TimeZone {
        match self {
            Schedule::Cron { tz, .. } => tz.clone(),
            Schedule::Every { .. } => TimeZone::UTC,
        }
    }

    /// `cron "0 * * * *" in America/New_York` or `every 15m`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Cron { expr, tz_name, .. } => format!("cron \"{expr}\" in {tz_name}"),
            Schedule::Every { every } => format!("every {}", format_duration(*every)),
        }
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Cron { tz, cron, .. } => {
                let z: Zoned = t.to_zoned(tz.clone());
                cron.find_next_occurrence(&z, false).ok().map(|z| z.timestamp())
            }
            Schedule::Every { every } => {
                let step = every.as_micros() as i128;
                let us = t.as_microsecond() as i128;
                let next = (us.div_euclid(step) + 1) * step;
                Timestamp::from_microsecond(i64::try_from(next).ok()?).ok()
            }
        }
    }

    /// The last tick at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Cron { tz, cron, .. } => {
                let z: Zoned = t.to_zoned(tz.clone());
                cron.find_previous_occurrence(&z, true).ok().map(|z| z.timestamp())
            }
            Schedule::Every { every } => {
                let step = every.as_micros() as i128;
                let us = t.as_microsecond() as i128;
                Timestamp::from_microsecond(i64::try_from(us.div_euclid(step) * step).ok()?).ok()
            }
        }
    }

    /// Ticks in `[from, to)`, oldest first, at most `limit` (then `Err` with the limit).
    pub fn ticks_between(&self, from: Timestamp, to: Timestamp, limit: usize) -> Result<Vec<Timestamp>, usize> {
        let mut out = Vec::new();
        let mut t = match from.checked_sub(SignedDuration::from_micros(1)) {
            Ok(t) => t,
            Err(_) => return Ok(out),
        };
        while let Some(next) = self.next_after(t) {
            if next >= to {
                break;
            }
            if out.len() == limit {
                return Err(limit);
            }
            out.push(next);
            t = next;
        }
        Ok(out)
    }

    /// Up to `n` ticks in `(after, upto]`, the most recent ones, oldest first; and
    /// whether older ticks in that range were left out.
    pub fn latest_ticks(&self, after: Timestamp, upto: Timestamp, n: usize) -> (Vec<Timestamp>, bool) {
        let mut out = Vec::new();
        let mut t = upto;
        let mut more = false;
        while let Some(tick) = self.last_at_or_before(t) {
            if tick <= after {
                break;
            }
            if out.len() == n {
                more = true;
                break;
            }
            out.push(tick);
            match tick.checked_sub(SignedDuration::from_micros(1)) {
                Ok(prev) => t = prev,
                Err(_) => break,
            }
        }
        out.reverse();
        (out, more)
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, t: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        let mut cur = t;
        while out.len() < n {
            match self.next_after(cur) {
                Some(next) => {
                    out.push(next);
                    cur = next;
                }
                None => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("PT2H").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").unwrap_err().contains("\"15m\""));
        assert!(parse_duration("-5m").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d 1h 1m 1s");
    }

    #[test]
    fn fixed_rate_ticks_align_to_the_epoch() {
        let s = Schedule::every(Duration::from_secs(900)).unwrap();
        let t: Timestamp = "2026-03-02T10:07:00Z".parse().unwrap();
        assert_eq!(s.next_after(t).unwrap().to_string(), "2026-03-02T10:15:00Z");
        assert_eq!(s.last_at_or_before(t).unwrap().to_string(), "2026-03-02T10:00:00Z");
        let from: Timestamp = "2026-03-02T10:00:00Z".parse().unwrap();
        let to: Timestamp = "2026-03-02T11:00:00Z".parse().unwrap();
        assert_eq!(s.ticks_between(from, to, 100).unwrap().len(), 4);
        assert_eq!(s.ticks_between(from, to, 2), Err(2));
    }

    #[test]
    fn cron_errors_say_how_to_fix() {
        let e = Schedule::cron("0 * * *", "UTC").unwrap_err().to_string();
        assert!(e.contains("has 4 fields") && e.contains("give 5"), "{e}");
        let e = Schedule::cron("0 25 * * *", "UTC").unwrap_err().to_string();
        assert!(e.contains("\"0 25 * * *\"") && e.contains("hour (0-23)"), "{e}");
        let e = Schedule::cron("0 * * * *", "Mars/Olympus").unwrap_err().to_string();
        assert!(e.contains("\"Mars/Olympus\"") && e.contains("America/New_York"), "{e}");
        Schedule::cron("0 0 * * * *", "UTC").unwrap();
        Schedule::cron("@hourly", "UTC").unwrap();
        assert!(Schedule::cron("0 0 0 1 1 * 2030", "UTC").is_err(), "no year field");
    }

    #[test]
    fn a_bad_expression_and_a_bad_zone_are_both_reported() {
        let e = Schedule::cron("61 * * * *", "Mars/Base").unwrap_err();
        assert!(e.cron.as_deref().is_some_and(|c| c.contains("\"61 * * * *\"")), "{e:?}");
        assert!(e.timezone.as_deref().is_some_and(|t| t.contains("\"Mars/Base\"")), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("cron: ") && text.contains("; timezone: "), "{text}");
    }

    #[test]
    fn crons_that_never_fire_are_refused_instead_of_searched_until_the_year_5000() {
        // Found by the plan_file fuzz target: croner parses `,` as an empty minute list,
        // and every next-tick search then took seconds.
        for (expr, why) in [
            (", * * * *", "minute field"),
            ("0 , * * *", "hour field"),
            (", 0 * * * *", "seconds field"),
            ("0 0 30 2 *", "no date"),
            ("0 0 31 4,6,9,11 *", "no date"),
        ] {
            let e = Schedule::cron(expr, "UTC").unwrap_err().to_string();
            assert!(e.contains(&format!("{expr:?} never fires")) && e.contains(why), "{expr}: {e}");
        }
        // Rare but real: every leap day, the last day of February, a leap day on a Monday.
        for expr in ["0 0 29 2 *", "0 0 L 2 *", "0 0 29 2 MON", "0 12 * * 7"] {
            let s = Schedule::cron(expr, "UTC").unwrap_or_else(|e| panic!("{expr}: {e}"));
            let t: Timestamp = "2026-03-08T06:30:00Z".parse().unwrap();
            assert!(s.next_after(t).is_some(), "{expr}");
        }
    }
}
