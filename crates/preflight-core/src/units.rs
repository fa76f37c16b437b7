//! Sizes and durations as fio and sysbench write them, for the benchmark options of the CLI
//! and the agent (one grammar; each caller words the refusal for its own error type).

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

/// Parses a duration: seconds, or a number with suffix `s`, `m` (minutes) or `ms`, e.g. `5`,
/// `30s`, `2m`, `500ms`. The error is what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    let (n, suffix) = number(s).ok_or("expected seconds, e.g. 5, 30s, 2m or 500ms")?;
    let n = n?;
    match suffix.to_ascii_lowercase().as_str() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" | "min" => n.checked_mul(60).map(Duration::from_secs).ok_or("too long"),
        _ => Err("unknown suffix: use s, m or ms"),
    }
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
        for (bad, why) in [
            ("", "expected seconds"),
            ("s", "expected seconds"),
            ("5h", "unknown suffix"),
            ("1.5", "unknown suffix"),
            ("99999999999999999999s", "number too large"),
            ("18446744073709551615m", "too long"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.starts_with(why), "{bad:?}: {e}");
        }
    }
}
