//! Formatting of Unix times as UTC, without a clock: callers pass the time in.

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time in seconds; a time outside the years -9999 to
/// 9999 as its number of seconds.
pub fn utc(unix_s: i64) -> String {
    match jiff::Timestamp::from_second(unix_s) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{unix_s} s after 1970-01-01 UTC"),
    }
}

/// A duration in seconds as a short human string: `42s`, `5m`, `3h`, `2d`.
pub fn ago(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_781_827_199), "2026-06-18 23:59:59 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(
            utc(i64::MAX),
            format!("{} s after 1970-01-01 UTC", i64::MAX)
        );
        assert_eq!(ago(59), "59s");
        assert_eq!(ago(3 * 86_400), "3d");
    }
}

/// Parses a duration written as people write it: `90`, `90s`, `15m`, `1h`, `7d` (one unit).
/// Returns seconds, or a message naming the value and the accepted forms.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        Some((i, 'd')) => (&t[..i], 86_400),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid duration {s:?}: use a whole number with s, m, h or d, e.g. 90s, 15m, 1h, 7d"))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration(" 7d "), Ok(604_800));
        for bad in ["", "h", "1.5h", "-1s", "1w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
