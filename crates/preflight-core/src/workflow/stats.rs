//! Pause accountability: counts and paused days grouped by reason, party, project or line.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::types::{Batch, BatchId, Event, EventKind, Timestamp, DAY_MS};

/// What to group pauses by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsKey {
    /// Pause reason category.
    Reason,
    /// Responsible party.
    Party,
    /// Project id.
    Project,
    /// Business line.
    Line,
}

impl fmt::Display for StatsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatsKey::Reason => "reason",
            StatsKey::Party => "party",
            StatsKey::Project => "project",
            StatsKey::Line => "line",
        })
    }
}

/// A grouping name that is not reason, party, project or line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown grouping {0:?}: use one of reason, party, project, line")]
pub struct UnknownStatsKey(pub String);

impl FromStr for StatsKey {
    type Err = UnknownStatsKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reason" => Ok(StatsKey::Reason),
            "party" => Ok(StatsKey::Party),
            "project" => Ok(StatsKey::Project),
            "line" => Ok(StatsKey::Line),
            _ => Err(UnknownStatsKey(s.to_string())),
        }
    }
}

/// One group of pauses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseStatsRow {
    /// Group key (reason id, party id, project id or business line).
    pub key: String,
    /// Number of pauses.
    pub count: u32,
    /// Total paused days.
    pub total_days: f64,
    /// Median paused days.
    pub median_days: f64,
}

/// Pause statistics over a history.
///
/// A pause lasts from its `paused` event to `resolved` or `terminated`; a pause still open
/// counts until `now`. GD confirming the reason does not end it. With `since`, only pauses that
/// began at or after it count. A readiness pause with several failing checks counts once, under
/// its first check's reason and party. Rows are sorted by key.
pub fn pause_stats(
    events: &[Event],
    batches: &BTreeMap<BatchId, Batch>,
    by: StatsKey,
    since: Option<Timestamp>,
    now: Timestamp,
) -> Vec<PauseStatsRow> {
    let mut open: BTreeMap<&str, (Timestamp, String)> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for ev in events {
        let Some(batch) = ev.batch.as_deref() else {
            continue;
        };
        match &ev.kind {
            EventKind::Paused { pause } => {
                if since.is_some_and(|s| pause.at < s) {
                    continue;
                }
                let key = match by {
                    StatsKey::Reason => pause.reason.id().to_string(),
                    StatsKey::Party => pause.party.id().to_string(),
                    StatsKey::Project => ev.project.clone().unwrap_or_default(),
                    StatsKey::Line => batches
                        .get(batch)
                        .map(|b| b.business_line.clone())
                        .unwrap_or_default(),
                };
                open.insert(batch, (pause.at, key));
            }
            EventKind::Resolved { .. } | EventKind::Terminated => {
                if let Some((start, key)) = open.remove(batch) {
                    groups
                        .entry(key)
                        .or_default()
                        .push(ev.at.since(start).max(0));
                }
            }
            _ => {}
        }
    }
    for (start, key) in open.into_values() {
        groups.entry(key).or_default().push(now.since(start).max(0));
    }
    groups
        .into_iter()
        .map(|(key, mut ms)| {
            ms.sort_unstable();
            let n = ms.len();
            let median = if n % 2 == 1 {
                ms[n / 2] as f64
            } else {
                (ms[n / 2 - 1] as f64 + ms[n / 2] as f64) / 2.0
            };
            PauseStatsRow {
                key,
                count: n as u32,
                total_days: ms.iter().map(|m| *m as f64).sum::<f64>() / DAY_MS as f64,
                median_days: median / DAY_MS as f64,
            }
        })
        .collect()
}
