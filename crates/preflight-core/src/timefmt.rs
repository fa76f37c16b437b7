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
