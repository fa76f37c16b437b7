//! TOML front end: the document is parsed once into spanned values, then every section and
//! every array element is deserialized on its own, so that one bad server does not hide the
//! errors of the next one.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{Errs, PlanErrorKind};
use super::ports::PortsInput;
use super::{JumpHostKind, OnExists, MAX_PLAN_BYTES};
use crate::net::Proto;

type S<T> = Spanned<T>;

/// Where a raw server came from, to name its fields in errors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    /// Index of the source (file) in [`Errs`].
    pub src: usize,
    /// Index in the `servers` array (TOML) or data row number (CSV, 1-based).
    pub index: usize,
    /// Whether it came from a CSV file, whose fields are named by column.
    pub csv: bool,
}

impl Origin {
    /// Field path of a server field, e.g. `servers[2].address` (TOML) or `ip` (CSV).
    pub(crate) fn field(&self, name: &str) -> String {
        if self.csv {
            let head = name.split(['[', '.']).next().unwrap_or(name);
            match head {
                "address" => "ip".to_string(),
                "apps" if name.ends_with(".ports") => "ports".to_string(),
                other => other.to_string(),
            }
        } else {
            format!("servers[{}].{name}", self.index)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBatch {
    pub project: Option<S<String>>,
    pub batch: Option<S<String>>,
    pub integrator: Option<S<String>>,
    pub notes: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub address: S<String>,
    pub hostname: S<String>,
    pub role: S<String>,
    #[serde(default)]
    pub apps: Vec<S<RawApp>>,
    #[serde(default)]
    pub data_dirs: Vec<S<String>>,
    #[serde(skip)]
    pub origin: Origin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApp {
    pub name: S<String>,
    #[serde(default)]
    pub protocol: Option<Proto>,
    #[serde(default)]
    pub ports: Option<S<PortsInput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub role: Option<S<String>>,
    pub server: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPath {
    pub from: S<RawEndpoint>,
    pub to: S<RawEndpoint>,
    pub ports: S<PortsInput>,
    #[serde(default)]
    pub protocol: Option<Proto>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVip {
    pub name: Option<S<String>>,
    pub address: S<String>,
    pub servers: Option<Vec<S<String>>>,
    pub role: Option<S<String>>,
    pub ports: Option<S<PortsInput>>,
    #[serde(default)]
    pub protocol: Option<Proto>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJumpHost {
    pub address: S<String>,
    pub kind: JumpHostKind,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManagement {
    #[serde(default)]
    pub sources: Vec<S<String>>,
    pub ssh_port: Option<S<i64>>,
    pub agent_port: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawThresholds {
    pub min_randread_iops: Option<S<u64>>,
    pub min_randwrite_iops: Option<S<u64>>,
    pub max_fdatasync_p99_us: Option<S<u64>>,
    pub min_bandwidth_mbit: Option<S<u64>>,
    pub min_cores: Option<S<u64>>,
    pub min_memory_mib: Option<S<u64>>,
    pub min_free_disk_gib: Option<S<u64>>,
    pub max_clock_skew_ms: Option<S<u64>>,
    pub report_max_age_minutes: Option<S<u64>>,
    /// `[thresholds.roles.ROLE]`: overrides for the servers of one role.
    pub roles: Option<std::collections::BTreeMap<S<String>, S<RawThresholds>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPair {
    pub from: S<String>,
    pub to: S<String>,
    pub port: Option<S<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawKind {
    App,
    DbBackup,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPackage {
    pub path: S<String>,
    pub size: u64,
    pub sha256: S<String>,
    pub kind: RawKind,
    pub database: Option<S<String>>,
    pub on_exists: Option<S<OnExists>>,
    pub on: Option<S<RawEndpoint>>,
}

/// Every section of a plan, as written; each list keeps its elements' spans and indices.
#[derive(Debug, Default)]
pub(crate) struct RawPlan {
    pub batch: RawBatch,
    pub servers: Vec<RawServer>,
    /// True when a `servers` element could not be read, so references to roles and servers
    /// may be missing and are not reported as unknown.
    pub servers_incomplete: bool,
    /// `(index, span of the element, path)`.
    pub paths: Vec<(usize, S<RawPath>)>,
    pub vips: Vec<(usize, S<RawVip>)>,
    pub jump_host: Option<RawJumpHost>,
    pub management: RawManagement,
    pub thresholds: RawThresholds,
    pub bandwidth: Vec<(usize, S<RawPair>)>,
    pub packages: Vec<(usize, S<RawPackage>)>,
}

/// Parses a TOML plan into its raw sections, reporting syntax and shape errors. Returns `None`
/// when the text is too large or not TOML at all.
pub(crate) fn parse(src: usize, text: &str, errs: &mut Errs<'_>) -> Option<RawPlan> {
    if text.len() > MAX_PLAN_BYTES {
        errs.push(
            src,
            0..0,
            "",
            PlanErrorKind::TooMany {
                what: "bytes in the plan file",
                found: text.len(),
                max: MAX_PLAN_BYTES,
            },
        );
        return None;
    }
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            errs.push(
                src,
                span,
                "",
                PlanErrorKind::Syntax(e.message().to_string()),
            );
        }
        return None;
    }
    let mut raw = RawPlan::default();
    for (key, value) in doc.into_inner() {
        let name = key.get_ref().as_ref();
        match name {
            "batch" => {
                if let Some(b) = de(src, value, "batch", errs) {
                    raw.batch = b;
                }
            }
            "jump_host" => raw.jump_host = de(src, value, "jump_host", errs),
            "management" => {
                if let Some(m) = de(src, value, "management", errs) {
                    raw.management = m;
                }
            }
            "thresholds" => {
                if let Some(t) = de(src, value, "thresholds", errs) {
                    raw.thresholds = t;
                }
            }
            "servers" => {
                for (i, v) in array(src, value, "servers", errs) {
                    match de::<RawServer>(src, v, &format!("servers[{i}]"), errs) {
                        Some(mut s) => {
                            s.origin = Origin {
                                src,
                                index: i,
                                csv: false,
                            };
                            raw.servers.push(s);
                        }
                        None => raw.servers_incomplete = true,
                    }
                }
            }
            "paths" => raw.paths = elements(src, value, "paths", errs),
            "vips" => raw.vips = elements(src, value, "vips", errs),
            "bandwidth" => raw.bandwidth = elements(src, value, "bandwidth", errs),
            "packages" => raw.packages = elements(src, value, "packages", errs),
            other => errs.push(
                src,
                key.span(),
                "",
                PlanErrorKind::UnknownSection(other.chars().take(64).collect()),
            ),
        }
    }
    Some(raw)
}

/// Deserializes one value, reporting a shape error at its span with the field path.
fn de<T: DeserializeOwned>(
    src: usize,
    value: S<DeValue<'_>>,
    field: &str,
    errs: &mut Errs<'_>,
) -> Option<T> {
    let whole = value.span();
    match serde_path_to_error::deserialize::<_, T>(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = clean_path(&e.path().to_string());
            let e = e.into_inner();
            let msg = with_fix(e.message());
            let mut field = field.to_string();
            if !path.is_empty() {
                field.push('.');
                field.push_str(&path);
            }
            if let Some(f) = inner_field(&msg).filter(|f| !field.ends_with(&format!(".{f}"))) {
                field.push('.');
                field.push_str(f);
            }
            errs.push(
                src,
                e.span().unwrap_or(whole),
                field,
                PlanErrorKind::Shape(msg),
            );
            None
        }
    }
}

/// A serde path without the private keys of `Spanned` and without the `?` that
/// serde_path_to_error writes for unknown positions; `.` when empty.
fn clean_path(p: &str) -> String {
    p.split('.')
        .filter(|seg| !seg.starts_with("$__") && *seg != "?" && !seg.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// Serde's message with the fix spelled out where serde gives none.
fn with_fix(msg: &str) -> String {
    if let Some(name) = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        format!("{msg}: add {name} = ... to this table (deploy/examples/plan.toml shows every key)")
    } else if msg.starts_with("unknown field `") {
        format!("{msg}: fix the spelling or remove the key")
    } else if msg.contains("expected struct RawEndpoint") {
        let what = msg.split(", expected").next().unwrap_or(msg);
        format!("{what}: write {{ role = \"nginx\" }} or {{ server = \"web-01\" }} (a role of the plan or a server's hostname)")
    } else if let Some(i) = msg.find("expected struct Raw") {
        // Never an internal type name: say a table is expected.
        format!("{}expected a table {{ key = value, ... }}", &msg[..i])
    } else if msg.ends_with("expected u64") {
        format!("{msg}: write a whole number, 0 or more")
    } else {
        msg.to_string()
    }
}

/// The field named by serde's "unknown field `x`" / "missing field `x`" messages.
fn inner_field(msg: &str) -> Option<&str> {
    let rest = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("missing field `"))?;
    rest.split('`').next()
}

/// The elements of an array of tables, each with its index.
fn array<'i>(
    src: usize,
    value: S<DeValue<'i>>,
    field: &str,
    errs: &mut Errs<'_>,
) -> Vec<(usize, S<DeValue<'i>>)> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(a) => a.into_iter().enumerate().collect(),
        other => {
            errs.push(
                src,
                span,
                field,
                PlanErrorKind::Shape(format!(
                    "expected an array of tables, found a {}: write [[{field}]] before each entry",
                    other.type_str()
                )),
            );
            Vec::new()
        }
    }
}

/// Deserializes every element of an array of tables, keeping the ones that parse.
fn elements<T: DeserializeOwned>(
    src: usize,
    value: S<DeValue<'_>>,
    field: &str,
    errs: &mut Errs<'_>,
) -> Vec<(usize, S<T>)> {
    array(src, value, field, errs)
        .into_iter()
        .filter_map(|(i, v)| {
            let span = v.span();
            de::<T>(src, v, &format!("{field}[{i}]"), errs).map(|t| (i, S::new(span, t)))
        })
        .collect()
}
