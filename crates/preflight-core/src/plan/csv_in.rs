//! CSV front end: the server list as exported from the planning spreadsheet.
//!
//! The first row names the columns, case-insensitively and in any order: `ip` (or `address`),
//! `hostname` (or `host`), `role`, and optionally `apps`, `ports`, `data_dirs`; the Chinese
//! headers of the planning template (IP地址, 主机名, 角色, 应用, 端口, 数据目录) work too, and
//! other columns (notes) are ignored. The delimiter is ',' unless the header row has none and
//! uses ';' or a tab. Several apps are separated by ';' with one ';'-separated port group per
//! app (`nginx;node_exporter` with `80,443;9100`); a port group may end in `/udp`. Without an
//! apps column (or with an empty cell), the ports belong to one app named after the role.
//! Empty rows and rows whose first cell starts with '#' are skipped.

use toml::Spanned;

use super::error::{Errs, PlanErrorKind};
use super::ports::PortsInput;
use super::toml_in::{Origin, RawApp, RawServer};
use super::{MAX_PLAN_BYTES, MAX_SERVERS};
use crate::net::Proto;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Address,
    Hostname,
    Role,
    Apps,
    Ports,
    DataDirs,
}

impl Col {
    fn name(self) -> &'static str {
        match self {
            Col::Address => "ip",
            Col::Hostname => "hostname",
            Col::Role => "role",
            Col::Apps => "apps",
            Col::Ports => "ports",
            Col::DataDirs => "data_dirs",
        }
    }

    fn from_header(h: &str) -> Option<Col> {
        let k: String = h
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect();
        Some(match k.as_str() {
            "ip" | "address" | "ipaddress" | "ipaddr" | "ip地址" | "地址" => Col::Address,
            "hostname" | "host" | "主机名" => Col::Hostname,
            "role" | "角色" => Col::Role,
            "apps" | "app" | "application" | "applications" | "应用" => Col::Apps,
            "ports" | "port" | "端口" => Col::Ports,
            "datadirs" | "datadir" | "数据目录" => Col::DataDirs,
            _ => return None,
        })
    }
}

/// Reads the servers of a CSV text. Returns them and whether every data row could be read.
pub(crate) fn parse(src: usize, text: &str, errs: &mut Errs<'_>) -> (Vec<RawServer>, bool) {
    if text.len() > MAX_PLAN_BYTES {
        errs.push(
            src,
            0..0,
            "",
            PlanErrorKind::TooMany {
                what: "bytes in the CSV file",
                found: text.len(),
                max: MAX_PLAN_BYTES,
            },
        );
        return (Vec::new(), false);
    }
    // Spreadsheets often write a UTF-8 byte order mark.
    let base = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let body = &text[base..];
    let first_line = body.lines().next().unwrap_or("");
    let delimiter = if first_line.contains(',') {
        b','
    } else if first_line.contains(';') {
        b';'
    } else if first_line.contains('\t') {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(body.as_bytes());
    let mut records = reader.records();

    // Header row.
    let header = loop {
        match records.next() {
            None => {
                errs.push(src, base..base, "ip", PlanErrorKind::CsvMissingColumn("ip"));
                return (Vec::new(), false);
            }
            Some(Err(e)) => {
                report_csv_error(src, base, &e, errs);
                return (Vec::new(), false);
            }
            Some(Ok(r)) if r.iter().all(|f| f.trim().is_empty()) => continue,
            Some(Ok(r)) => break r,
        }
    };
    let header_at = header.position().map_or(base, |p| base + offset(p.byte()));
    let mut cols: Vec<Option<Col>> = Vec::with_capacity(header.len());
    let mut complete = true;
    for (i, h) in header.iter().enumerate() {
        let c = Col::from_header(h);
        if let Some(c) = c {
            if cols.contains(&Some(c)) {
                errs.push(
                    src,
                    field_at(base, body, delimiter, &header, i),
                    c.name(),
                    PlanErrorKind::CsvDuplicateColumn(h.trim().to_string()),
                );
                complete = false;
            }
        }
        cols.push(c);
    }
    for required in [Col::Address, Col::Hostname, Col::Role] {
        if !cols.contains(&Some(required)) {
            errs.push(
                src,
                header_at..header_at,
                required.name(),
                PlanErrorKind::CsvMissingColumn(required.name()),
            );
            complete = false;
        }
    }
    if !complete {
        return (Vec::new(), false);
    }
    let find = |c: Col| cols.iter().position(|x| *x == Some(c));

    let mut servers = Vec::new();
    let mut row = 0usize;
    for rec in records {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                report_csv_error(src, base, &e, errs);
                complete = false;
                continue;
            }
        };
        let start = rec.position().map_or(base, |p| base + offset(p.byte()));
        if rec.iter().all(|f| f.trim().is_empty())
            || rec.get(0).is_some_and(|f| f.trim_start().starts_with('#'))
        {
            continue;
        }
        row += 1;
        if rec.len() != header.len() {
            errs.push(
                src,
                start..start,
                "",
                PlanErrorKind::CsvFieldCount {
                    expected: header.len(),
                    found: rec.len(),
                },
            );
            complete = false;
            continue;
        }
        if row > MAX_SERVERS {
            errs.push(
                src,
                start..start,
                "",
                PlanErrorKind::TooMany {
                    what: "servers",
                    found: row,
                    max: MAX_SERVERS,
                },
            );
            complete = false;
            break;
        }
        let cell = |c: Col| -> Option<Spanned<String>> {
            let i = find(c)?;
            let v = rec.get(i)?.trim().to_string();
            Some(Spanned::new(field_at(base, body, delimiter, &rec, i), v))
        };
        let (Some(address), Some(hostname), Some(role)) =
            (cell(Col::Address), cell(Col::Hostname), cell(Col::Role))
        else {
            complete = false;
            continue;
        };
        let origin = Origin {
            src,
            index: row,
            csv: true,
        };
        let apps = match apps(role.get_ref(), cell(Col::Apps), cell(Col::Ports)) {
            Ok(a) => a,
            Err((span, kind)) => {
                errs.push(src, span, "ports", kind);
                complete = false;
                continue;
            }
        };
        let data_dirs = cell(Col::DataDirs)
            .map(|d| {
                let span = d.span();
                d.get_ref()
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Spanned::new(span.clone(), s.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        servers.push(RawServer {
            address,
            hostname,
            role,
            apps,
            data_dirs,
            origin,
        });
    }
    (servers, complete)
}

type AppsError = (std::ops::Range<usize>, PlanErrorKind);

/// Pairs the apps cell with the ports cell.
fn apps(
    role: &str,
    apps: Option<Spanned<String>>,
    ports: Option<Spanned<String>>,
) -> Result<Vec<Spanned<RawApp>>, AppsError> {
    let split = |s: &Spanned<String>| -> Vec<String> {
        s.get_ref()
            .split(';')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    let names = apps.as_ref().map(split).unwrap_or_default();
    let groups = ports.as_ref().map(split).unwrap_or_default();
    let apps_span = apps.as_ref().map(Spanned::span);
    let ports_span = ports.as_ref().map(Spanned::span);
    let span = ports_span.clone().or(apps_span.clone()).unwrap_or(0..0);
    let names: Vec<String> = match (names.len(), groups.len()) {
        (0, 0) => return Ok(Vec::new()),
        (0, 1) => vec![role.to_string()],
        (a, g) if g == 0 || a == g => names,
        (a, g) => {
            return Err((
                span,
                PlanErrorKind::CsvAppsPortsMismatch { apps: a, groups: g },
            ))
        }
    };
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let (protocol, ports) = match groups.get(i) {
                None => (None, None),
                Some(g) => {
                    let (text, proto) = if let Some(t) = g.strip_suffix("/udp") {
                        (t, Some(Proto::Udp))
                    } else if let Some(t) = g.strip_suffix("/tcp") {
                        (t, Some(Proto::Tcp))
                    } else {
                        (g.as_str(), None)
                    };
                    let ps = ports_span.clone().unwrap_or(0..0);
                    (
                        proto,
                        Some(Spanned::new(ps, PortsInput::Text(text.to_string()))),
                    )
                }
            };
            let name_span = apps_span.clone().unwrap_or(span.clone());
            Spanned::new(
                name_span.clone(),
                RawApp {
                    name: Spanned::new(name_span, name),
                    protocol,
                    ports,
                },
            )
        })
        .collect())
}

/// Byte offset (as an empty range) of the content of field `i` of a record in the text: the
/// raw record is scanned from its start, honouring quotes, so that the column is exact.
fn field_at(
    base: usize,
    body: &str,
    delimiter: u8,
    rec: &csv::StringRecord,
    i: usize,
) -> std::ops::Range<usize> {
    let start = rec
        .position()
        .map_or(0, |p| offset(p.byte()))
        .min(body.len());
    let bytes = &body.as_bytes()[start..];
    let mut field = 0usize;
    let mut in_quotes = false;
    let mut at_field_start = true;
    for (k, &b) in bytes.iter().enumerate() {
        if field == i && at_field_start {
            // Point at the content, past an opening quote.
            let skip = usize::from(b == b'"');
            let at = base + start + k + skip;
            return at..at;
        }
        at_field_start = false;
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\n' if !in_quotes => break,
            _ if b == delimiter && !in_quotes => {
                field += 1;
                at_field_start = true;
            }
            _ => {}
        }
    }
    let at = base
        + start
        + bytes.len().min(
            bytes
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(bytes.len()),
        );
    at..at
}

fn offset(b: u64) -> usize {
    usize::try_from(b).unwrap_or(usize::MAX)
}

fn report_csv_error(src: usize, base: usize, e: &csv::Error, errs: &mut Errs<'_>) {
    let at = e.position().map_or(base, |p| base + offset(p.byte()));
    errs.push(src, at..at, "", PlanErrorKind::Csv(e.to_string()));
}
