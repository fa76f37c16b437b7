//! Sizes and durations as people write them on a command line: one grammar for every option
//! of the CLI and the agent (benchmarks as fio and sysbench write them, token lifetimes, the
//! demo clock); each caller words the refusal for its own error type.

use std::time::Duration;

/// Parses a size: a number with an optional binary suffix `k`, `m`, `g`, `t` (also `kb`,
/// `kib`, ... in any case), e.g. `4k`, `1m`, `2300`, `64MiB`. The error is what is accepted.
pub fn parse_size(s: &str) -> Result<u64, &'static str> {
    let (n, suffix) =
        number(s).ok_or("expected a number with an optional k/m/g/t suffix, e.g. 4k or 1g")?;
    let n = n?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err("unknown suffix: use k, m, g or t (powers of 1024)"),
    };
    n.checked_mul(1u64 << shift).ok_or("size overflows 64 bits")
}

/// Parses a duration: seconds, or a whole number with one unit `ms`, `s`, `m` (also `min`),
/// `h` or `d`, e.g. `5`, `500ms`, `30s`, `2m`, `1h`, `7d`. The error is what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    let (n, suffix) = number(s)
        .ok_or("expected seconds, or a whole number with a unit: 500ms, 30s, 15m, 1h, 7d")?;
    let n = n?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or("too long")
    };
    match suffix.to_ascii_lowercase().as_str() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => Err("unknown unit: use ms, s, m, h or d, e.g. 30s, 15m, 1h, 7d"),
    }
}

/// [`parse_duration`] in whole seconds (token lifetimes and the like): `1500ms` is refused.
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    let d = parse_duration(s).map_err(|why| format!("invalid duration {s:?}: {why}"))?;
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "invalid duration {s:?}: use whole seconds, e.g. 90s, 15m, 1h, 7d"
        ));
    }
    Ok(d.as_secs())
}

/// The leading digits of `s` (trimmed) as a number, and the rest; `None` without digits.
fn number(s: &str) -> Option<(Result<u64, &'static str>, &str)> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return None;
    }
    Some((num.parse().map_err(|_| "number too large"), suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_fio() {
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size(" 2300 "), Ok(2300));
        assert_eq!(parse_size("22m"), Ok(22 << 20));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        for (bad, why) in [
            ("", "expected a number"),
            ("k", "expected a number"),
            ("4x", "unknown suffix"),
            ("-1", "expected a number"),
            ("1.5g", "unknown suffix"),
            ("99999999999999999999", "number too large"),
            ("20000000t", "size overflows 64 bits"),
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.starts_with(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn durations_parse_like_fio() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3min"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 7d "), Ok(Duration::from_secs(604_800)));
        for (bad, why) in [
            ("", "expected seconds"),
            ("s", "expected seconds"),
            ("h", "expected seconds"),
            ("-1s", "expected seconds"),
            ("5w", "unknown unit"),
            ("1.5", "unknown unit"),
            ("1.5h", "unknown unit"),
            ("99999999999999999999s", "number too large"),
            ("18446744073709551615m", "too long"),
            ("99999999999999999d", "too long"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.starts_with(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn whole_seconds_for_lifetimes() {
        assert_eq!(parse_seconds("90"), Ok(90));
        assert_eq!(parse_seconds("15m"), Ok(900));
        assert_eq!(parse_seconds("2000ms"), Ok(2));
        let e = parse_seconds("1500ms").unwrap_err();
        assert!(e.contains("whole seconds") && e.contains("1500ms"), "{e}");
        let e = parse_seconds("1w").unwrap_err();
        assert!(e.contains("\"1w\"") && e.contains("7d"), "{e}");
    }
}
