//! Plan errors: every one names the file, the line and column, the field and the fix; and the
//! collector ([`Errs`]) the readers (TOML, CSV) and the validation record them in.

use std::fmt;
use std::ops::Range;

use super::MAX_ERRORS;

/// Where something sits in a plan source: file, 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// File name as given by the caller (the core never opens it).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem in a plan, with its place and the field it concerns.
///
/// Displayed as `FILE:LINE:COL: field servers[2].address: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {}{kind}", field_prefix(.field))]
pub struct PlanError {
    /// File, line and column of the offending text.
    pub location: Location,
    /// Path of the field, e.g. `servers[2].address` or, for CSV, the column (`ip`); empty for
    /// syntax errors that concern no field.
    pub field: String,
    /// What is wrong and how to fix it.
    pub kind: PlanErrorKind,
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("field {field}: ")
    }
}

/// What is wrong with a plan, in words that say how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanErrorKind {
    /// The text is not valid TOML.
    #[error("toml syntax: {0}")]
    Syntax(String),
    /// The TOML is valid but a value has the wrong shape (type, unknown or missing field).
    #[error("{0}")]
    Shape(String),
    /// A top-level table that the plan format does not know.
    #[error("unknown section {0:?}: use one of batch, servers, paths, vips, jump_host, management, thresholds, bandwidth, packages")]
    UnknownSection(String),
    /// The input or one of its lists is larger than the cap.
    #[error("too many {what} ({found}): at most {max} are allowed, split the plan")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many were found.
        found: usize,
        /// The cap.
        max: usize,
    },
    /// A string longer than the cap for that field.
    #[error("value is {found} bytes long: at most {max} are allowed")]
    TooLong {
        /// Length found.
        found: usize,
        /// The cap.
        max: usize,
    },
    /// A required value is empty.
    #[error("value is empty: {0}")]
    Empty(&'static str),
    /// Not an IPv4 or IPv6 address.
    #[error("invalid IP address {0:?}: write a plain IPv4 or IPv6 address such as 10.20.0.11")]
    InvalidAddress(String),
    /// Not a valid host name.
    #[error("invalid hostname {0:?}: use letters, digits, '-' and '.', labels of 1 to 63 characters not starting or ending with '-'")]
    InvalidHostname(String),
    /// Not a valid identifier (role, app, database).
    #[error("invalid name {0:?}: use 1 to 64 letters, digits, '_', '-' or '.'")]
    InvalidName(String),
    /// Two servers share an address.
    #[error(
        "duplicate address {address}: already used at {first}, every server needs its own address"
    )]
    DuplicateAddress {
        /// The repeated address.
        address: String,
        /// Where it was first declared.
        first: Location,
    },
    /// Two servers share a host name (compared case-insensitively).
    #[error("duplicate hostname {hostname:?}: already used at {first}, every server needs its own hostname")]
    DuplicateHostname {
        /// The repeated host name.
        hostname: String,
        /// Where it was first declared.
        first: Location,
    },
    /// A port number outside 1..=65535.
    #[error("port {0} is out of range: use 1 to 65535")]
    PortOutOfRange(i64),
    /// A range whose start is above its end.
    #[error("reversed port range {start}-{end}: write the lower port first ({end}-{start})")]
    ReversedPortRange {
        /// First port as written.
        start: u16,
        /// Last port as written.
        end: u16,
    },
    /// A port list item that is neither a number nor a range.
    #[error("invalid port {0:?}: write ports as \"80,443,8080-8090\" or [80, 443, \"8080-8090\"]")]
    InvalidPort(String),
    /// The same port and protocol planned twice on one server.
    #[error("port {port}/{protocol} is already planned on this server by app {first_app:?}: each port belongs to one app")]
    DuplicatePort {
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: String,
        /// The app that claimed it first.
        first_app: String,
    },
    /// A role that no server has.
    #[error("unknown role {role:?}: no server has it; roles in this plan: {known}")]
    UnknownRole {
        /// The role named.
        role: String,
        /// The roles that exist, comma separated.
        known: String,
    },
    /// A server reference (hostname or address) that matches no server.
    #[error("unknown server {0:?}: name a server of this plan by its hostname or address")]
    UnknownServer(String),
    /// An endpoint table with both or neither of `role` and `server`.
    #[error("set exactly one of role = \"...\" or server = \"...\"")]
    EndpointShape,
    /// A path or pair from a server to itself.
    #[error("{0:?} is both source and destination: name two different servers")]
    SelfPair(String),
    /// Something declared twice.
    #[error("duplicate {what} {value:?}: already declared at {first}")]
    Duplicate {
        /// What kind of thing.
        what: &'static str,
        /// The repeated value.
        value: String,
        /// Where it was first declared.
        first: Location,
    },
    /// A virtual IP that is also a server's own address.
    #[error("virtual IP {0} is also the address of server {1:?}: a virtual IP must be an address of its own")]
    VipIsServerAddress(String, String),
    /// A virtual IP outside the batch's own networks.
    #[error("virtual IP {address} is outside the batch's networks ({networks}): a virtual IP shares the network of its servers; use an address there, or correct the servers' addresses")]
    VipOutsideNetworks {
        /// The virtual IP.
        address: String,
        /// The batch's networks, comma-separated.
        networks: String,
    },
    /// A bandwidth pair with no port given and no required path between its servers.
    #[error("no port for the bandwidth test from {from} to {to}: no required TCP path opens a port from {from} to {to}; add port = N (a port open from {from} to {to}) or a [[paths]] entry between them")]
    NoBandwidthPort {
        /// Sender.
        from: String,
        /// Receiver.
        to: String,
    },
    /// A malformed CIDR.
    #[error("invalid CIDR {value:?}: {reason}")]
    InvalidCidr {
        /// The text given.
        value: String,
        /// What is wrong and the fix.
        reason: String,
    },
    /// A SHA-256 that is not 64 hex digits.
    #[error("invalid sha256 {0:?}: write the 64 hex digits printed by `sha256sum FILE`")]
    InvalidSha256(String),
    /// A database backup without the database it restores to.
    #[error("a db_backup needs the database it restores to: add database = \"NAME\"")]
    MissingDatabase,
    /// A database backup without the decision for an existing database.
    #[error("a db_backup needs the decision if the database exists: add on_exists = \"overwrite\" or \"rename\"")]
    MissingOnExists,
    /// `database` or `on_exists` on an app file.
    #[error("{0} is only for kind = \"db_backup\": remove it or change the kind")]
    OnlyForBackup(&'static str),
    /// A file path that is not absolute and clean.
    #[error("invalid path {value:?}: {reason}")]
    InvalidPath {
        /// The path given.
        value: String,
        /// What is wrong and the fix.
        reason: &'static str,
    },
    /// A threshold outside its sane range.
    #[error("{name} = {value} is out of range: use {min} to {max}")]
    ThresholdOutOfRange {
        /// The threshold key.
        name: &'static str,
        /// The value given.
        value: u64,
        /// Lowest sane value.
        min: u64,
        /// Highest sane value.
        max: u64,
    },
    /// The plan names no server at all.
    #[error("the plan has no servers: add [[servers]] tables or import a CSV server list")]
    NoServers,
    /// A CSV record that cannot be read.
    #[error("csv: {0}")]
    Csv(String),
    /// A required CSV column is absent from the header row.
    #[error("missing column {0:?} in the header row: the first row must name the columns ip, hostname, role and optionally apps, ports, data_dirs")]
    CsvMissingColumn(&'static str),
    /// A header naming the same column twice.
    #[error("column {0:?} appears twice in the header row: keep one")]
    CsvDuplicateColumn(String),
    /// A record with another number of fields than the header.
    #[error("row has {found} fields but the header has {expected}: check for a stray or missing delimiter")]
    CsvFieldCount {
        /// Fields in the header.
        expected: usize,
        /// Fields in this record.
        found: usize,
    },
    /// CSV apps and ports columns with different group counts.
    #[error("{apps} apps but {groups} port groups: separate apps with ';' and give one ';'-separated port group per app, e.g. apps \"nginx;node_exporter\" ports \"80,443;9100\"")]
    CsvAppsPortsMismatch {
        /// Number of apps.
        apps: usize,
        /// Number of port groups.
        groups: usize,
    },
    /// Error collection stopped at the cap.
    #[error("too many errors, stopped after {0}: fix these first")]
    TooManyErrors(usize),
}

/// A plan that failed validation: every error found, sorted by file and position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidPlan {
    /// All errors, at least one.
    pub errors: Vec<PlanError>,
}

impl fmt::Display for InvalidPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Byte offset to line and column translation for one source text.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    /// Line and column (1-based, column in characters) of a byte offset; offsets past the end
    /// or inside a character are clamped.
    pub(crate) fn line_col(&self, offset: usize) -> (u32, u32) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset).max(1) - 1;
        let start = self.starts[line];
        let col = self.text[start..offset].chars().count();
        (to_u32(line + 1), to_u32(col + 1))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Error collector over one or two sources (the TOML plan, the CSV server list).
pub(crate) struct Errs<'a> {
    sources: Vec<(String, LineIndex<'a>)>,
    errors: Vec<PlanError>,
    full: bool,
}

impl<'a> Errs<'a> {
    pub(crate) fn new() -> Self {
        Self {
            sources: Vec::new(),
            errors: Vec::new(),
            full: false,
        }
    }

    /// Registers a source and returns its index.
    pub(crate) fn add_source(&mut self, file: &str, text: &'a str) -> usize {
        self.sources.push((file.to_string(), LineIndex::new(text)));
        self.sources.len() - 1
    }

    pub(crate) fn location(&self, src: usize, offset: usize) -> Location {
        match self.sources.get(src) {
            Some((file, index)) => {
                let (line, column) = index.line_col(offset);
                Location {
                    file: file.clone(),
                    line,
                    column,
                }
            }
            None => Location {
                file: String::new(),
                line: 1,
                column: 1,
            },
        }
    }

    /// Records an error at the start of `span`; past [`MAX_ERRORS`] records one last error
    /// saying so and drops the rest.
    pub(crate) fn push(
        &mut self,
        src: usize,
        span: Range<usize>,
        field: impl Into<String>,
        kind: PlanErrorKind,
    ) {
        if self.full {
            return;
        }
        let location = self.location(src, span.start);
        if self.errors.len() >= MAX_ERRORS {
            self.full = true;
            self.errors.push(PlanError {
                location,
                field: String::new(),
                kind: PlanErrorKind::TooManyErrors(MAX_ERRORS),
            });
            return;
        }
        self.errors.push(PlanError {
            location,
            field: field.into(),
            kind,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn finish(mut self) -> InvalidPlan {
        let overflow = self
            .errors
            .last()
            .filter(|e| matches!(e.kind, PlanErrorKind::TooManyErrors(_)))
            .cloned();
        if overflow.is_some() {
            self.errors.pop();
        }
        self.errors.sort_by(|a, b| a.location.cmp(&b.location));
        self.errors.extend(overflow);
        InvalidPlan {
            errors: self.errors,
        }
    }
}
