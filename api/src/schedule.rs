//! Schedules as the CronJob controller reads them (robfig/cron's standard parser): five
//! fields with lists, ranges, steps and names, the `@hourly`-style descriptors, and
//! `@every DURATION`. Parsed once for two uses: validation, and the longest interval
//! between runs, which alerts compare the age of the last backup with.

use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::jiff::civil::Date;

/// The names `month` and `day of week` fields accept, in value order.
const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
/// Descriptors and the five fields they stand for.
const DESCRIPTORS: [(&str, &str); 7] = [
    ("yearly", "0 0 1 1 *"),
    ("annually", "0 0 1 1 *"),
    ("monthly", "0 0 1 * *"),
    ("weekly", "0 0 * * 0"),
    ("daily", "0 0 * * *"),
    ("midnight", "0 0 * * *"),
    ("hourly", "0 * * * *"),
];

/// Run days are looked for in this many days from 2027: long enough to see a schedule of
/// the 29th of February run twice.
const HORIZON_DAYS: i64 = 9 * 366;

/// A field of a five-field schedule: its name, range and names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field { name: "minute", min: 0, max: 59, names: &[] },
    Field { name: "hour", min: 0, max: 23, names: &[] },
    Field { name: "day of month", min: 1, max: 31, names: &[] },
    Field { name: "month", min: 1, max: 12, names: &MONTHS },
    Field { name: "day of week", min: 0, max: 6, names: &WEEKDAYS },
];

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// `@every DURATION`.
    Every(Duration),
    /// Five fields, as bit sets of the values they match.
    Cron {
        minutes: u64,
        hours: u64,
        days: u64,
        months: u64,
        weekdays: u64,
        /// Whether day of month, and day of week, match every day (`*` or `?`): when
        /// both are restricted, a day matching either runs (as in cron).
        any_day: bool,
        any_weekday: bool,
    },
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(schedule: &str) -> Result<Self, Self::Err> {
        let schedule = schedule.trim();
        if schedule.starts_with("TZ=") || schedule.starts_with("CRON_TZ=") {
            return Err("a time zone inside the schedule is not supported: set timeZone".into());
        }
        let fields = match schedule.strip_prefix('@') {
            Some(descriptor) => {
                if let Some(every) = descriptor.strip_prefix("every ") {
                    let every = every.trim();
                    return match parse_go_duration(every) {
                        Ok(duration) if !duration.is_zero() => Ok(Schedule::Every(duration)),
                        Ok(_) => Err(format!("@every {every}: the interval is zero")),
                        Err(message) => Err(format!("@every {every}: {message}")),
                    };
                }
                let (_, fields) = DESCRIPTORS.iter().find(|(name, _)| *name == descriptor).ok_or_else(|| {
                    let names: Vec<&str> = DESCRIPTORS.iter().map(|(name, _)| *name).collect();
                    format!("unknown descriptor @{descriptor}; use one of @{}", names.join(", @"))
                })?;
                *fields
            }
            None => schedule,
        };
        let texts: Vec<&str> = fields.split_whitespace().collect();
        if texts.len() != FIELDS.len() {
            return Err(format!(
                "{schedule:?} has {} fields; a cron schedule has five (minute hour day-of-month month day-of-week), \
                 or is a descriptor like @hourly",
                texts.len()
            ));
        }
        let mut sets = [0u64; 5];
        for ((text, field), set) in texts.iter().zip(&FIELDS).zip(&mut sets) {
            *set = parse_field(text, field).map_err(|m| format!("{} {text:?}: {m}", field.name))?;
        }
        let star = |text: &str| text.starts_with('*') || text.starts_with('?');
        let [minutes, hours, days, months, weekdays] = sets;
        let parsed = Schedule::Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day: star(texts[2]),
            any_weekday: star(texts[4]),
        };
        if parsed.longest_interval().is_none() {
            return Err(format!("{schedule:?} never runs (no such day)"));
        }
        Ok(parsed)
    }
}

impl Schedule {
    /// The longest time between two consecutive runs (for a schedule that runs at most
    /// once, none). Time zones and daylight saving time aside.
    pub fn longest_interval(&self) -> Option<Duration> {
        let Schedule::Cron { minutes, hours, days, months, weekdays, any_day, any_weekday } = *self else {
            let Schedule::Every(every) = self else { return None };
            return Some(*every);
        };
        let has = |set: u64, value: i64| set & (1 << value) != 0;
        // Every day that runs, runs at the same minutes.
        let times: Vec<i64> = (0..24)
            .filter(|h| has(hours, *h))
            .flat_map(|h| (0..60).filter(|m| has(minutes, *m)).map(move |m| h * 60 + m))
            .collect();
        let (first, last) = (*times.first()?, *times.last()?);
        let within_a_day = times.windows(2).map(|pair| pair[1] - pair[0]).max();
        let mut date = Date::new(2027, 1, 1).ok()?;
        let (mut previous_day, mut longest) = (None, within_a_day);
        for day in 0..HORIZON_DAYS {
            let by_day = has(days, i64::from(date.day()));
            let by_weekday = has(weekdays, i64::from(date.weekday().to_sunday_zero_offset()));
            let day_matches = if any_day || any_weekday { by_day && by_weekday } else { by_day || by_weekday };
            if has(months, i64::from(date.month())) && day_matches {
                if let Some(previous) = previous_day {
                    longest = longest.max(Some((day - previous) * 24 * 60 + first - last));
                }
                previous_day = Some(day);
            }
            date = date.tomorrow().ok()?;
        }
        // One run a year at most in the horizon, or never: no interval.
        previous_day?;
        longest.map(|minutes| Duration::from_secs(minutes.unsigned_abs() * 60))
    }
}

/// The values a field matches, as a bit set.
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let value = |part: &str| -> Result<u32, String> {
        let lower = part.to_ascii_lowercase();
        let number = match field.names.iter().position(|name| *name == lower) {
            Some(index) => index as u32 + field.min,
            None => part.parse::<u32>().map_err(|_| format!("{part:?} is not a number"))?,
        };
        if (field.min..=field.max).contains(&number) {
            Ok(number)
        } else {
            Err(format!("{number} is outside {}-{}", field.min, field.max))
        }
    };
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let step = match step {
            Some(step) => step
                .parse::<u32>()
                .ok()
                .filter(|step| *step > 0)
                .ok_or_else(|| format!("step {step:?} is not a positive number"))?,
            None => 1,
        };
        let (low, high) = match range {
            "*" | "?" => (field.min, field.max),
            _ => match range.split_once('-') {
                Some((low, high)) => (value(low)?, value(high)?),
                // `5/15` is 5, 20, 35, 50: a start with a step runs to the end.
                None if step > 1 => (value(range)?, field.max),
                None => (value(range)?, value(range)?),
            },
        };
        if low > high {
            return Err(format!("range {range} ends before it starts"));
        }
        for number in (low..=high).step_by(step as usize) {
            set |= 1 << number;
        }
    }
    Ok(set)
}

/// A Go duration as `@every` takes it: `90m`, `1h30m`, `1.5h`, `45s`.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const UNITS: [(&str, f64); 7] =
        [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)];
    if text.is_empty() {
        return Err("is empty".into());
    }
    let (mut rest, mut seconds) = (text, 0.0);
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let number: f64 =
            rest[..digits].parse().ok().filter(|_| digits > 0).ok_or("is not a duration like 90m or 1h30m")?;
        rest = &rest[digits..];
        let end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..end];
        let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit).ok_or_else(|| {
            let names: Vec<&str> = UNITS.iter().map(|(name, _)| *name).collect();
            format!("unit {unit:?} is not one of {}", names.join(", "))
        })?;
        seconds += number * scale;
        rest = &rest[end..];
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_the_cronjob_controller_accepts_is_accepted() {
        for schedule in [
            "0 * * * *",
            "*/15 * * * *",
            "0 0-6/2 * * *",
            "5,35 3 1,15 * *",
            "0 3 * JAN-MAR mon-fri",
            "0 3 ? * SUN",
            "@hourly",
            "@daily",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "@midnight",
            "@every 90m",
            "@every 1h30m",
        ] {
            assert!(schedule.parse::<Schedule>().is_ok(), "{schedule}: {:?}", schedule.parse::<Schedule>());
        }
    }

    #[test]
    fn schedules_the_controller_rejects_are_refused_with_the_part_named() {
        for (schedule, expected) in [
            ("hourly", "has 1 fields"),
            ("0 * * *", "has 4 fields"),
            ("60 * * * *", "minute \"60\": 60 is outside 0-59"),
            ("0 24 * * *", "hour"),
            ("0 0 0 * *", "day of month"),
            ("0 0 * 13 *", "month"),
            ("0 0 * * 7", "day of week"),
            ("*/0 * * * *", "step \"0\""),
            ("0 5-1 * * *", "ends before it starts"),
            ("0 0 * * funday", "is not a number"),
            ("@fortnightly", "unknown descriptor"),
            ("@every soon", "@every soon"),
            ("@every 0s", "zero"),
            ("CRON_TZ=UTC 0 * * * *", "time zone"),
            ("0 0 30 2 *", "never runs"),
        ] {
            let error = schedule.parse::<Schedule>().expect_err(schedule);
            assert!(error.contains(expected), "{schedule}: {error}");
        }
    }

    #[test]
    fn the_longest_interval_is_the_longest_gap_between_runs() {
        let hours = |h: u64| Some(Duration::from_secs(h * 3600));
        for (schedule, expected) in [
            ("@hourly", hours(1)),
            ("*/15 * * * *", Some(Duration::from_secs(900))),
            ("@daily", hours(24)),
            ("0 3 * * mon-fri", hours(24 * 3)),
            ("0 2,14 * * *", hours(12)),
            ("0 1 * * 0", hours(24 * 7)),
            ("@monthly", hours(24 * 31)),
            ("@yearly", hours(24 * 366)),
            ("0 0 29 2 *", hours(24 * (366 + 3 * 365))),
            // Day of month and day of week both restricted: either runs.
            ("0 0 1 * mon", hours(24 * 7)),
            ("@every 1h30m", Some(Duration::from_secs(5400))),
        ] {
            let parsed: Schedule = schedule.parse().expect(schedule);
            assert_eq!(parsed.longest_interval(), expected, "{schedule}");
        }
    }
}
