//! Slurm's ways of writing times: durations (`TimeLimit`, `MaxTime`: `minutes`,
//! `minutes:seconds`, `hours:minutes:seconds`, `days-hours[:minutes[:seconds]]`,
//! `UNLIMITED`) and end times (`EndTime`: local time without a zone, `YYYY-MM-DDTHH:MM:SS`).
//! Pure, so every form is unit-tested.

use std::time::Duration;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};

/// A Slurm duration; `Ok(None)` for no limit (`UNLIMITED`, `INFINITE`).
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if matches!(s, "UNLIMITED" | "INFINITE" | "Partition_Limit") {
        return Ok(None);
    }
    let bad = || format!("not a Slurm duration: {s:?}");
    let num = |t: &str| -> Result<u64, String> {
        if t.is_empty() || t.len() > 9 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, s),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Result<_, _>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    Ok(Some(Duration::from_secs(secs)))
}

/// `d` the way Slurm writes it (`[days-]hours:minutes:seconds`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, s) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    match days {
        0 => format!("{h}:{m:02}:{s:02}"),
        _ => format!("{days}-{h:02}:{m:02}:{s:02}"),
    }
}

/// Whole minutes, rounded up: what `scontrol update TimeLimit=` takes.
pub fn minutes_up(d: Duration) -> u64 {
    d.as_secs().div_ceil(60)
}

/// An `EndTime` (this machine's local time, as Slurm prints it); `None` for `N/A`,
/// `Unknown` and anything else that is no time.
pub fn parse_end(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S").ok()?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_slurm_duration_is_read() {
        let m = |n: u64| Some(Duration::from_secs(n));
        assert_eq!(parse_duration("3").unwrap(), m(180));
        assert_eq!(parse_duration("3:30").unwrap(), m(210));
        assert_eq!(parse_duration("1:02:03").unwrap(), m(3723));
        assert_eq!(parse_duration("2-3").unwrap(), m(2 * 86400 + 3 * 3600));
        assert_eq!(
            parse_duration("2-03:04").unwrap(),
            m(2 * 86400 + 3 * 3600 + 240)
        );
        assert_eq!(parse_duration("1-00:00:05").unwrap(), m(86405));
        assert_eq!(parse_duration("UNLIMITED").unwrap(), None);
        for bad in ["", "x", "1:2:3:4", "-1", "1-", "1-2:3:4:5", "1h", " : "] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_are_written_as_slurm_reads_them() {
        for d in [0u64, 59, 3600, 3723, 86405, 3 * 86400 + 7] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), Some(d));
        }
        assert_eq!(format_duration(Duration::from_secs(180)), "0:03:00");
        assert_eq!(minutes_up(Duration::from_secs(61)), 2);
        assert_eq!(minutes_up(Duration::from_secs(120)), 2);
    }

    #[test]
    fn end_times_are_local_and_n_a_is_none() {
        let t = parse_end("2026-12-02T10:30:00").unwrap();
        let local = t.with_timezone(&Local);
        assert_eq!(
            local.format("%Y-%m-%dT%H:%M:%S").to_string(),
            "2026-12-02T10:30:00"
        );
        assert_eq!(parse_end("N/A"), None);
        assert_eq!(parse_end("Unknown"), None);
    }
}
