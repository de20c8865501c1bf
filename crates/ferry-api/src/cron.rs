//! Cron schedules as CronJobs write them: the standard five fields (minute, hour, day of
//! month, month, day of week) with ranges, lists, steps and names, the `@yearly`…`@hourly`
//! macros and `@every <duration>`, and an optional `TZ=`/`CRON_TZ=` prefix — the dialect of
//! `robfig/cron`'s `ParseStandard`, which kube-apiserver and kube-controller-manager use. The
//! API server validates with [`Schedule::parse`] and the CronJob controller computes run times
//! with [`Schedule::next_after`], so both agree on every schedule.

use k8s_openapi::jiff::civil::{Date, DateTime};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan};

/// Why a schedule does not parse (the message is `robfig/cron`'s, as kube reports it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Day of month was `*` or `?` (then only the day of week restricts days, and back).
    dom_star: bool,
    dow_star: bool,
    /// `@every`: a fixed interval in seconds instead of the fields.
    every: Option<i64>,
    /// The `TZ=` or `CRON_TZ=` prefix, when the schedule names one.
    pub time_zone: Option<String>,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// Whether a schedule string names a time zone itself (`TZ=` or `CRON_TZ=`).
pub fn names_time_zone(schedule: &str) -> bool {
    schedule.contains("TZ")
}

impl Schedule {
    /// Parses a schedule in the standard (five field) dialect.
    pub fn parse(spec: &str) -> Result<Self, ParseError> {
        let mut spec = spec.trim();
        if spec.is_empty() {
            return Err(ParseError("empty spec string".into()));
        }
        let mut time_zone = None;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let (prefix, rest) = spec.split_once(' ').unwrap_or((spec, ""));
            let name = prefix.split_once('=').map(|(_, n)| n).unwrap_or_default();
            TimeZone::get(name).map_err(|_| {
                ParseError(format!(
                    "provided bad location {name}: unknown time zone {name}"
                ))
            })?;
            time_zone = Some(name.to_string());
            spec = rest.trim();
        }
        if let Some(descriptor) = spec.strip_prefix('@') {
            let fields = match descriptor {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => {
                    if let Some(d) = descriptor.strip_prefix("every ") {
                        let secs = parse_go_duration(d.trim()).ok_or_else(|| {
                            ParseError(format!(
                                "failed to parse duration {spec}: time: invalid duration {:?}",
                                d.trim()
                            ))
                        })?;
                        let mut s = Self::parse("* * * * *")?;
                        s.every = Some(secs.max(1));
                        s.time_zone = time_zone;
                        return Ok(s);
                    }
                    return Err(ParseError(format!("unrecognized descriptor: {spec}")));
                }
            };
            let mut s = Self::parse(fields)?;
            s.time_zone = time_zone;
            return Ok(s);
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ParseError(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            )));
        }
        Ok(Self {
            minutes: parse_field(fields[0], &MINUTES)?,
            hours: parse_field(fields[1], &HOURS)?,
            days_of_month: parse_field(fields[2], &DOM)?,
            months: parse_field(fields[3], &MONTHS)?,
            days_of_week: parse_field(fields[4], &DOW)?,
            dom_star: fields[2].starts_with('*') || fields[2].starts_with('?'),
            dow_star: fields[4].starts_with('*') || fields[4].starts_with('?'),
            every: None,
            time_zone,
        })
    }

    /// The first time strictly after `after` that the schedule fires, in `zone` (the
    /// schedule's own `TZ=` zone wins); `None` when none comes within five years.
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        if let Some(every) = self.every {
            // `@every` runs on whole seconds from the last time.
            let next = after.as_second().checked_add(every)?;
            return Timestamp::from_second(next).ok();
        }
        let zone = match &self.time_zone {
            Some(name) => TimeZone::get(name).ok()?,
            None => zone.clone(),
        };
        let start = after.to_zoned(zone.clone()).datetime();
        // The next whole minute after `after`.
        let mut t = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.year() + 5;
        while t.year() <= limit {
            if !bit(self.months, t.month() as u32) {
                let first = Date::new(t.year(), t.month(), 1)
                    .ok()?
                    .checked_add(1.month())
                    .ok()?;
                t = first.to_datetime(k8s_openapi::jiff::civil::Time::midnight());
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(k8s_openapi::jiff::civil::Time::midnight());
                continue;
            }
            if !bit(self.hours, t.hour() as u32) {
                t = truncate_hour(t)?.checked_add(1.hour()).ok()?;
                continue;
            }
            if !bit(self.minutes, t.minute() as u32) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let at = t.to_zoned(zone.clone()).ok()?.timestamp();
            if at > after {
                return Some(at);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = bit(self.days_of_month, date.day() as u32);
        let dow = bit(
            self.days_of_week,
            date.weekday().to_sunday_zero_offset() as u32,
        );
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

fn truncate_hour(t: DateTime) -> Option<DateTime> {
    t.with()
        .minute(0)
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .ok()
}

fn bit(set: u64, n: u32) -> bool {
    set & (1 << n) != 0
}

fn parse_field(field: &str, bounds: &Bounds) -> Result<u64, ParseError> {
    let mut bits = 0u64;
    for part in field.split(',') {
        bits |= parse_range(part, bounds)?;
    }
    Ok(bits)
}

fn parse_range(expr: &str, b: &Bounds) -> Result<u64, ParseError> {
    let (range, step) = match expr.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (expr, None),
    };
    if step.is_some_and(|s| s.contains('/')) {
        return Err(ParseError(format!("too many slashes: {expr}")));
    }
    let (start, mut end, star) = if range == "*" || range == "?" {
        (b.min, b.max, true)
    } else {
        match range.split_once('-') {
            Some((lo, hi)) => {
                if hi.contains('-') {
                    return Err(ParseError(format!("too many hyphens: {expr}")));
                }
                (value(lo, b)?, value(hi, b)?, false)
            }
            None => {
                let v = value(range, b)?;
                (v, v, false)
            }
        }
    };
    let step = match step {
        Some(s) => {
            let n = parse_int(s)?;
            // `N/step` means N through the maximum.
            if !star && !range.contains('-') {
                end = b.max;
            }
            n
        }
        None => 1,
    };
    if start < b.min {
        return Err(ParseError(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        )));
    }
    if end > b.max {
        return Err(ParseError(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        )));
    }
    if start > end {
        return Err(ParseError(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(ParseError(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok(bits)
}

fn value(s: &str, b: &Bounds) -> Result<u32, ParseError> {
    let lower = s.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    parse_int(s)
}

fn parse_int(s: &str) -> Result<u32, ParseError> {
    s.parse::<u32>().map_err(|_| {
        ParseError(format!(
            "failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax"
        ))
    })
}

/// Seconds of a Go duration such as `1h30m`, `90s` or `5m`.
fn parse_go_duration(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += number * factor;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_minute_fires_on_the_next_whole_minute() {
        let s = Schedule::parse("*/1 * * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T10:00:30Z"), &TimeZone::UTC),
            Some(at("2026-01-01T10:01:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-01-01T10:01:00Z"), &TimeZone::UTC),
            Some(at("2026-01-01T10:02:00Z"))
        );
    }

    #[test]
    fn macros_names_and_day_rules_follow_robfig_cron() {
        let hourly = Schedule::parse("@hourly").unwrap();
        assert_eq!(
            hourly.next_after(at("2026-01-01T10:00:00Z"), &TimeZone::UTC),
            Some(at("2026-01-01T11:00:00Z"))
        );
        // 2026-01-01 is a Thursday; the first Monday is the 5th.
        let mondays = Schedule::parse("30 9 * JAN mon").unwrap();
        assert_eq!(
            mondays.next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            Some(at("2026-01-05T09:30:00Z"))
        );
        // Both day fields restricted: either matches (the 15th, or a Friday: the 2nd).
        let either = Schedule::parse("0 0 15 * 5").unwrap();
        assert_eq!(
            either.next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            Some(at("2026-01-02T00:00:00Z"))
        );
        let steps = Schedule::parse("5/20 1-3 * * *").unwrap();
        assert_eq!(
            steps.next_after(at("2026-01-01T01:45:00Z"), &TimeZone::UTC),
            Some(at("2026-01-01T02:05:00Z"))
        );
    }

    #[test]
    fn time_zones_shift_the_wall_clock() {
        let s = Schedule::parse("0 9 * * *").unwrap();
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T00:00:00Z"), &tokyo),
            Some(at("2026-01-01T00:00:00Z").checked_add(24.hours()).unwrap())
        );
        let prefixed = Schedule::parse("CRON_TZ=Asia/Tokyo 0 9 * * *").unwrap();
        assert_eq!(prefixed.time_zone.as_deref(), Some("Asia/Tokyo"));
    }

    #[test]
    fn bad_schedules_say_why() {
        assert_eq!(
            Schedule::parse("foo").unwrap_err().0,
            "expected exactly 5 fields, found 1: [foo]"
        );
        assert!(
            Schedule::parse("61 * * * *")
                .unwrap_err()
                .0
                .contains("above maximum")
        );
        assert!(Schedule::parse("@fortnightly").is_err());
        assert!(Schedule::parse("* * * * * *").is_err());
        assert_eq!(Schedule::parse("@every 1h30m").unwrap().every, Some(5400));
    }
}
