//! The time zone people read times in (`--tz`, `PREFLIGHT_TZ`, then `TZ`; UTC otherwise).
//!
//! Every time a command shows goes through [`time`] (or [`Zone::show`]), so all of them follow
//! the same zone; JSON output keeps UTC milliseconds. The zone database is jiff's: the
//! system's `/usr/share/zoneinfo` when there is one, else the copy bundled in the binary, so
//! `--tz Asia/Shanghai` works on a minimal host too.

use std::sync::OnceLock;

use jiff::tz::TimeZone;

/// A display zone: UTC, or a named IANA zone.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `None`: UTC.
    tz: Option<TimeZone>,
    name: String,
}

impl Default for Zone {
    fn default() -> Self {
        Zone::utc()
    }
}

impl Zone {
    /// UTC.
    pub fn utc() -> Zone {
        Zone {
            tz: None,
            name: "UTC".into(),
        }
    }

    /// A zone by IANA name (`Asia/Shanghai`), or `UTC`. The error names the value and what to
    /// write instead.
    pub fn named(name: &str) -> Result<Zone, String> {
        let n = name.trim();
        if n.eq_ignore_ascii_case("utc") || n == "Etc/UTC" || n == "Z" {
            return Ok(Zone::utc());
        }
        if n.is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) {
            return Err(format!(
                "time zone {name:?}: write an IANA name such as Asia/Shanghai, or UTC"
            ));
        }
        let tz = TimeZone::get(n).map_err(|_| {
            format!("unknown time zone {n:?}: write an IANA name such as Asia/Shanghai, Europe/Berlin or UTC")
        })?;
        Ok(Zone {
            tz: Some(tz),
            name: n.to_string(),
        })
    }

    /// The zone for a command: the `--tz` value (which clap also fills from `PREFLIGHT_TZ`),
    /// else the `TZ` variable if it names a zone (a malformed `TZ` is ignored: it was not set
    /// for preflight), else UTC.
    pub fn choose(flag: Option<&str>, tz_env: Option<&str>) -> Result<Zone, String> {
        if let Some(f) = flag.filter(|f| !f.trim().is_empty()) {
            return Zone::named(f);
        }
        match tz_env.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => Ok(Zone::named(t.trim_start_matches(':')).unwrap_or_default()),
            None => Ok(Zone::utc()),
        }
    }

    /// Whether this is UTC (then a time is shown once, not twice).
    pub fn is_utc(&self) -> bool {
        self.tz.is_none()
    }

    /// The zone's name as given (`Asia/Shanghai`, `UTC`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A Unix time in milliseconds in this zone: `2026-12-04 09:45:55 +08:00 Asia/Shanghai`,
    /// or `2026-12-04 01:45:55 UTC`.
    pub fn show(&self, unix_ms: i64) -> String {
        let Some(tz) = &self.tz else {
            return preflight_core::timefmt::utc(unix_ms.div_euclid(1000));
        };
        match jiff::Timestamp::from_millisecond(unix_ms) {
            Ok(ts) => {
                let z = ts.to_zoned_datetime(tz.clone());
                format!("{} {}", z.strftime("%Y-%m-%d %H:%M:%S %:z"), self.name)
            }
            Err(_) => preflight_core::timefmt::utc(unix_ms.div_euclid(1000)),
        }
    }

    /// UTC, and this zone after it when it is another: `2026-12-04 01:45:55 UTC (2026-12-04
    /// 09:45:55 +08:00 Asia/Shanghai)`.
    pub fn show_both(&self, unix_ms: i64) -> String {
        let utc = preflight_core::timefmt::utc(unix_ms.div_euclid(1000));
        if self.is_utc() {
            utc
        } else {
            format!("{utc} ({})", self.show(unix_ms))
        }
    }
}

static DISPLAY: OnceLock<Zone> = OnceLock::new();

/// Sets the zone of [`time`] for this process (once, at start; later calls are ignored).
pub fn set_display_zone(z: Zone) {
    let _ = DISPLAY.set(z);
}

/// The zone set with [`set_display_zone`], UTC when none was.
pub fn display_zone() -> Zone {
    DISPLAY.get().cloned().unwrap_or_default()
}

/// A Unix time in milliseconds in the display zone: the one function every command shows
/// times with.
pub fn time(unix_ms: i64) -> String {
    match DISPLAY.get() {
        Some(z) => z.show(unix_ms),
        None => preflight_core::timefmt::utc(unix_ms.div_euclid(1000)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_is_eight_hours_ahead_and_named() {
        let z = Zone::named("Asia/Shanghai").unwrap();
        // 2026-12-04 01:45:55 UTC
        let ms = 1_796_348_755_000;
        assert_eq!(z.show(ms), "2026-12-04 09:45:55 +08:00 Asia/Shanghai");
        assert_eq!(
            z.show_both(ms),
            "2026-12-04 01:45:55 UTC (2026-12-04 09:45:55 +08:00 Asia/Shanghai)"
        );
        assert_eq!(Zone::utc().show(ms), "2026-12-04 01:45:55 UTC");
        assert_eq!(Zone::utc().show_both(ms), "2026-12-04 01:45:55 UTC");
    }

    #[test]
    fn zones_follow_daylight_saving() {
        let z = Zone::named("Europe/Berlin").unwrap();
        assert_eq!(
            z.show(1_781_827_199_000),
            "2026-06-19 01:59:59 +02:00 Europe/Berlin"
        );
        assert_eq!(
            z.show(1_796_348_755_000),
            "2026-12-04 02:45:55 +01:00 Europe/Berlin"
        );
    }

    #[test]
    fn choice_order_and_errors() {
        let pick =
            |f: Option<&str>, e: Option<&str>| Zone::choose(f, e).map(|z| z.name().to_string());
        assert_eq!(pick(None, None).unwrap(), "UTC");
        assert_eq!(
            pick(Some("Asia/Shanghai"), Some("Europe/Berlin")).unwrap(),
            "Asia/Shanghai"
        );
        assert_eq!(pick(None, Some("Europe/Berlin")).unwrap(), "Europe/Berlin");
        assert_eq!(pick(None, Some(":Asia/Tokyo")).unwrap(), "Asia/Tokyo");
        // A TZ that names no zone was not meant for us: UTC.
        assert_eq!(pick(None, Some("CST-8")).unwrap(), "UTC");
        let e = pick(Some("Mars/Olympus"), None).unwrap_err();
        assert!(
            e.contains("Mars/Olympus") && e.contains("Asia/Shanghai"),
            "{e}"
        );
        assert!(Zone::named("utc").unwrap().is_utc());
    }
}
