//! Semantic validation: raw, spanned sections in, a [`Plan`] or every error out.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;
use toml::Spanned;

use super::error::{Errs, PlanErrorKind};
use super::ports::{self, PortsInput};
use super::toml_in::{self, RawEndpoint, RawKind, RawPlan, RawServer};
use super::*;
use crate::net::Proto;

/// Plan from a TOML text and optionally a CSV server list.
pub(crate) fn build(
    toml_file: &str,
    toml_text: &str,
    csv: Option<(&str, &str)>,
) -> Result<Plan, InvalidPlan> {
    let mut errs = Errs::new();
    let src = errs.add_source(toml_file, toml_text);
    let raw = toml_in::parse(src, toml_text, &mut errs);
    let Some(mut raw) = raw else {
        return Err(errs.finish());
    };
    if let Some((file, text)) = csv {
        let csv_src = errs.add_source(file, text);
        let (servers, complete) = csv_in::parse(csv_src, text, &mut errs);
        raw.servers.extend(servers);
        raw.servers_incomplete |= !complete;
    }
    let plan = Validator::new(src, &mut errs).plan(raw);
    if errs.is_empty() {
        Ok(plan)
    } else {
        Err(errs.finish())
    }
}

/// Plan from a CSV server list alone.
pub(crate) fn build_csv_only(file: &str, text: &str) -> Result<Plan, InvalidPlan> {
    let mut errs = Errs::new();
    let src = errs.add_source(file, text);
    let (servers, complete) = csv_in::parse(src, text, &mut errs);
    let raw = RawPlan {
        servers,
        servers_incomplete: !complete,
        ..RawPlan::default()
    };
    let plan = Validator::new(src, &mut errs).plan(raw);
    if errs.is_empty() {
        Ok(plan)
    } else {
        Err(errs.finish())
    }
}

struct Validator<'e, 'a> {
    /// The main source (the TOML plan, or the CSV when alone).
    src: usize,
    errs: &'e mut Errs<'a>,
    /// Lowercased hostname → canonical hostname.
    hostnames: HashMap<String, String>,
    addresses: HashMap<IpAddr, String>,
    /// Role → number of servers.
    roles: BTreeMap<String, usize>,
    /// Whether an unknown role may be caused by a server that failed to parse.
    lenient_roles: bool,
    /// Whether an unknown server reference may be caused by a server that failed to parse.
    lenient_refs: bool,
}

impl<'e, 'a> Validator<'e, 'a> {
    fn new(src: usize, errs: &'e mut Errs<'a>) -> Self {
        Self {
            src,
            errs,
            hostnames: HashMap::new(),
            addresses: HashMap::new(),
            roles: BTreeMap::new(),
            lenient_roles: false,
            lenient_refs: false,
        }
    }

    fn err(&mut self, span: Range<usize>, field: impl Into<String>, kind: PlanErrorKind) {
        self.errs.push(self.src, span, field, kind);
    }

    fn plan(mut self, raw: RawPlan) -> Plan {
        self.lenient_refs = raw.servers_incomplete;
        self.lenient_roles = raw.servers_incomplete;
        let servers = self.servers(raw.servers);
        let batch = self.batch(raw.batch);
        let paths = self.paths(raw.paths);
        let vips = self.vips(raw.vips, &servers);
        let jump_host = raw.jump_host.and_then(|j| {
            let address = self.address(self.src, &j.address, "jump_host.address")?;
            Some(JumpHost {
                address,
                kind: j.kind,
            })
        });
        let management = self.management(raw.management);
        let (thresholds, role_thresholds) = self.thresholds(&raw.thresholds);
        let bandwidth = self.bandwidth(raw.bandwidth, &servers, &paths);
        let packages = self.packages(raw.packages);
        Plan {
            batch,
            servers,
            paths,
            vips,
            jump_host,
            management,
            thresholds,
            role_thresholds,
            bandwidth,
            packages,
        }
    }

    fn text(&mut self, v: Option<Spanned<String>>, field: &str, max: usize) -> Option<String> {
        let v = v?;
        let len = v.get_ref().len();
        if len > max {
            self.err(v.span(), field, PlanErrorKind::TooLong { found: len, max });
            return None;
        }
        Some(v.into_inner())
    }

    fn batch(&mut self, b: toml_in::RawBatch) -> BatchInfo {
        BatchInfo {
            project: self.text(b.project, "batch.project", MAX_TEXT),
            batch: self.text(b.batch, "batch.batch", MAX_TEXT),
            integrator: self.text(b.integrator, "batch.integrator", MAX_TEXT),
            notes: self.text(b.notes, "batch.notes", 16 * MAX_TEXT),
        }
    }

    fn address(&mut self, src: usize, v: &Spanned<String>, field: &str) -> Option<IpAddr> {
        match parse_address(v.get_ref()) {
            Some(a) => Some(a),
            None => {
                self.errs.push(
                    src,
                    v.span(),
                    field,
                    PlanErrorKind::InvalidAddress(short(v.get_ref())),
                );
                None
            }
        }
    }

    fn name(&mut self, src: usize, v: &Spanned<String>, field: &str) -> Option<String> {
        if is_name(v.get_ref()) {
            Some(v.get_ref().clone())
        } else {
            self.errs.push(
                src,
                v.span(),
                field,
                PlanErrorKind::InvalidName(short(v.get_ref())),
            );
            None
        }
    }

    fn servers(&mut self, raw: Vec<RawServer>) -> Vec<Server> {
        let mut first_address: HashMap<IpAddr, Location> = HashMap::new();
        let mut first_hostname: HashMap<String, Location> = HashMap::new();
        let mut out = Vec::new();
        if raw.is_empty() && !self.lenient_refs {
            self.err(0..0, "servers", PlanErrorKind::NoServers);
        }
        for (n, s) in raw.into_iter().enumerate() {
            let o = s.origin.clone();
            let src = o.src;
            if n >= MAX_SERVERS {
                self.errs.push(
                    src,
                    s.address.span(),
                    o.field("address"),
                    PlanErrorKind::TooMany {
                        what: "servers",
                        found: n + 1,
                        max: MAX_SERVERS,
                    },
                );
                break;
            }
            let address = self.address(src, &s.address, &o.field("address"));
            if let Some(a) = address {
                let here = self.errs.location(src, s.address.span().start);
                if let Some(first) = first_address.get(&a) {
                    self.errs.push(
                        src,
                        s.address.span(),
                        o.field("address"),
                        PlanErrorKind::DuplicateAddress {
                            address: a.to_string(),
                            first: first.clone(),
                        },
                    );
                } else {
                    first_address.insert(a, here);
                }
            }
            let hostname = if is_hostname(s.hostname.get_ref()) {
                let h = s.hostname.get_ref().clone();
                let key = h.to_ascii_lowercase();
                let here = self.errs.location(src, s.hostname.span().start);
                if let Some(first) = first_hostname.get(&key) {
                    self.errs.push(
                        src,
                        s.hostname.span(),
                        o.field("hostname"),
                        PlanErrorKind::DuplicateHostname {
                            hostname: h.clone(),
                            first: first.clone(),
                        },
                    );
                } else {
                    first_hostname.insert(key, here);
                }
                Some(h)
            } else {
                self.errs.push(
                    src,
                    s.hostname.span(),
                    o.field("hostname"),
                    PlanErrorKind::InvalidHostname(short(s.hostname.get_ref())),
                );
                None
            };
            let role = self.name(src, &s.role, &o.field("role"));
            match &role {
                Some(r) => *self.roles.entry(r.clone()).or_default() += 1,
                None => self.lenient_roles = true,
            }
            let apps = self.apps(&o, s.apps);
            let data_dirs = self.data_dirs(&o, s.data_dirs);
            if let Some(h) = &hostname {
                self.hostnames
                    .entry(h.to_ascii_lowercase())
                    .or_insert_with(|| h.clone());
                if let Some(a) = address {
                    self.addresses.entry(a).or_insert_with(|| h.clone());
                }
            }
            if let (Some(address), Some(hostname), Some(role)) = (address, hostname, role) {
                out.push(Server {
                    address,
                    hostname,
                    role,
                    apps,
                    data_dirs,
                });
            } else {
                // A server with a bad identity: references to it must not add noise.
                self.lenient_refs = true;
            }
        }
        out
    }

    fn apps(&mut self, o: &toml_in::Origin, raw: Vec<Spanned<toml_in::RawApp>>) -> Vec<App> {
        let src = o.src;
        let mut out = Vec::new();
        let mut claimed: BTreeMap<(u16, Proto), String> = BTreeMap::new();
        let mut total = 0usize;
        for (i, a) in raw.into_iter().enumerate() {
            let span = a.span();
            let a = a.into_inner();
            if i >= MAX_APPS_PER_SERVER {
                self.errs.push(
                    src,
                    span,
                    o.field(&format!("apps[{i}]")),
                    PlanErrorKind::TooMany {
                        what: "apps on one server",
                        found: i + 1,
                        max: MAX_APPS_PER_SERVER,
                    },
                );
                break;
            }
            let name = self.name(src, &a.name, &o.field(&format!("apps[{i}].name")));
            let protocol = a.protocol.unwrap_or_default();
            let ports_field = o.field(&format!("apps[{i}].ports"));
            let ranges = match &a.ports {
                None => Vec::new(),
                Some(p) => self.ports(src, p, &ports_field).unwrap_or_default(),
            };
            let n = ports::count(&ranges);
            total += n;
            if total > MAX_PORTS_PER_SERVER {
                let at = a.ports.as_ref().map_or(span.clone(), |p| p.span());
                self.errs.push(
                    src,
                    at,
                    ports_field,
                    PlanErrorKind::TooMany {
                        what: "ports on one server",
                        found: total,
                        max: MAX_PORTS_PER_SERVER,
                    },
                );
                break;
            }
            let Some(name) = name else { continue };
            let at = a.ports.as_ref().map_or(span, |p| p.span());
            for r in &ranges {
                for port in r.ports() {
                    if let Some(first) = claimed.get(&(port, protocol)) {
                        self.errs.push(
                            src,
                            at.clone(),
                            ports_field.clone(),
                            PlanErrorKind::DuplicatePort {
                                port,
                                protocol: protocol.to_string(),
                                first_app: first.clone(),
                            },
                        );
                    } else {
                        claimed.insert((port, protocol), name.clone());
                    }
                }
            }
            out.push(App {
                name,
                protocol,
                ports: ranges,
            });
        }
        out
    }

    fn ports(
        &mut self,
        src: usize,
        p: &Spanned<PortsInput>,
        field: &str,
    ) -> Option<Vec<PortRange>> {
        match p.get_ref().parse() {
            Ok(r) => Some(r),
            Err(kinds) => {
                for k in kinds.into_iter().take(8) {
                    self.errs.push(src, p.span(), field, k);
                }
                None
            }
        }
    }

    fn data_dirs(&mut self, o: &toml_in::Origin, raw: Vec<Spanned<String>>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut seen: Vec<Location> = Vec::new();
        for (i, d) in raw.into_iter().enumerate() {
            let field = o.field(&format!("data_dirs[{i}]"));
            if i >= MAX_DATA_DIRS {
                self.errs.push(
                    o.src,
                    d.span(),
                    field,
                    PlanErrorKind::TooMany {
                        what: "data directories on one server",
                        found: i + 1,
                        max: MAX_DATA_DIRS,
                    },
                );
                break;
            }
            if let Err(reason) = check_path(d.get_ref()) {
                self.errs.push(
                    o.src,
                    d.span(),
                    field,
                    PlanErrorKind::InvalidPath {
                        value: short(d.get_ref()),
                        reason,
                    },
                );
                continue;
            }
            let v = normalize_dir(d.get_ref());
            if let Some(k) = out.iter().position(|x| *x == v) {
                let first = seen[k].clone();
                self.errs.push(
                    o.src,
                    d.span(),
                    field,
                    PlanErrorKind::Duplicate {
                        what: "data directory",
                        value: v,
                        first,
                    },
                );
                continue;
            }
            seen.push(self.errs.location(o.src, d.span().start));
            out.push(v);
        }
        out
    }

    /// Resolves a server reference (hostname or address) to the canonical hostname.
    fn server_ref(&mut self, v: &Spanned<String>, field: &str) -> Option<String> {
        let s = v.get_ref();
        let found = match parse_address(s) {
            Some(a) => self.addresses.get(&a).cloned(),
            None => self.hostnames.get(&s.to_ascii_lowercase()).cloned(),
        };
        if found.is_none() && !self.lenient_refs {
            self.err(v.span(), field, PlanErrorKind::UnknownServer(short(s)));
        }
        found
    }

    fn role_ref(&mut self, v: &Spanned<String>, field: &str) -> Option<String> {
        if self.roles.contains_key(v.get_ref()) {
            return Some(v.get_ref().clone());
        }
        if !self.lenient_roles {
            let known = self.roles.keys().cloned().collect::<Vec<_>>().join(", ");
            self.err(
                v.span(),
                field,
                PlanErrorKind::UnknownRole {
                    role: short(v.get_ref()),
                    known,
                },
            );
        }
        None
    }

    fn endpoint(&mut self, e: &Spanned<RawEndpoint>, field: &str) -> Option<Endpoint> {
        match (&e.get_ref().role, &e.get_ref().server) {
            (Some(r), None) => self
                .role_ref(r, &format!("{field}.role"))
                .map(Endpoint::Role),
            (None, Some(s)) => self
                .server_ref(s, &format!("{field}.server"))
                .map(Endpoint::Server),
            _ => {
                self.err(e.span(), field, PlanErrorKind::EndpointShape);
                None
            }
        }
    }

    fn endpoint_size(&self, e: &Endpoint) -> usize {
        match e {
            Endpoint::Role(r) => self.roles.get(r).copied().unwrap_or(0),
            Endpoint::Server(_) => 1,
        }
    }

    fn too_many(&mut self, n: usize, span: Range<usize>, field: &str, what: &'static str) -> bool {
        if n >= MAX_ENTRIES {
            self.err(
                span,
                field,
                PlanErrorKind::TooMany {
                    what,
                    found: n + 1,
                    max: MAX_ENTRIES,
                },
            );
            return true;
        }
        false
    }

    fn paths(&mut self, raw: Vec<(usize, Spanned<toml_in::RawPath>)>) -> Vec<RequiredPath> {
        let mut out = Vec::new();
        let mut expanded = 0usize;
        for (n, (i, p)) in raw.into_iter().enumerate() {
            let base = format!("paths[{i}]");
            if self.too_many(n, p.span(), &base, "paths") {
                break;
            }
            let span = p.span();
            let p = p.into_inner();
            let from = self.endpoint(&p.from, &format!("{base}.from"));
            let to = self.endpoint(&p.to, &format!("{base}.to"));
            let ports = self.ports(self.src, &p.ports, &format!("{base}.ports"));
            let (Some(from), Some(to), Some(ports)) = (from, to, ports) else {
                continue;
            };
            if let (Endpoint::Server(a), Endpoint::Server(b)) = (&from, &to) {
                if a == b {
                    self.err(span, &base, PlanErrorKind::SelfPair(a.clone()));
                    continue;
                }
            }
            expanded = expanded.saturating_add(
                self.endpoint_size(&from)
                    .saturating_mul(self.endpoint_size(&to))
                    .saturating_mul(ports::count(&ports)),
            );
            if expanded > MAX_EXPANDED_PATHS {
                self.err(
                    span,
                    &base,
                    PlanErrorKind::TooMany {
                        what: "expanded (from, to, port) paths",
                        found: expanded,
                        max: MAX_EXPANDED_PATHS,
                    },
                );
                break;
            }
            out.push(RequiredPath {
                from,
                to,
                ports,
                protocol: p.protocol.unwrap_or_default(),
            });
        }
        out
    }

    fn vips(
        &mut self,
        raw: Vec<(usize, Spanned<toml_in::RawVip>)>,
        servers: &[Server],
    ) -> Vec<VirtualIp> {
        let mut out = Vec::new();
        let mut first: HashMap<IpAddr, Location> = HashMap::new();
        let networks = super::batch_networks(servers.iter().map(|s| s.address));
        for (n, (i, v)) in raw.into_iter().enumerate() {
            let base = format!("vips[{i}]");
            if n >= MAX_VIPS {
                self.err(
                    v.span(),
                    &base,
                    PlanErrorKind::TooMany {
                        what: "virtual IPs (one per cluster of the batch)",
                        found: n + 1,
                        max: MAX_VIPS,
                    },
                );
                break;
            }
            let span = v.span();
            let v = v.into_inner();
            let name = self.text(v.name, &format!("{base}.name"), MAX_TEXT);
            let field = format!("{base}.address");
            let address = self.address(self.src, &v.address, &field);
            if let Some(a) = address {
                // Only where the servers are (and they parsed): never an address elsewhere.
                if !self.lenient_refs && !networks.iter().any(|n| n.contains(&a)) {
                    self.err(
                        v.address.span(),
                        &field,
                        PlanErrorKind::VipOutsideNetworks {
                            address: a.to_string(),
                            networks: networks
                                .iter()
                                .map(|n| n.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        },
                    );
                }
                if let Some(s) = servers.iter().find(|s| s.address == a) {
                    self.err(
                        v.address.span(),
                        &field,
                        PlanErrorKind::VipIsServerAddress(a.to_string(), s.hostname.clone()),
                    );
                }
                let here = self.errs.location(self.src, v.address.span().start);
                if let Some(f) = first.get(&a) {
                    self.err(
                        v.address.span(),
                        &field,
                        PlanErrorKind::Duplicate {
                            what: "virtual IP",
                            value: a.to_string(),
                            first: f.clone(),
                        },
                    );
                } else {
                    first.insert(a, here);
                }
            }
            let members: Option<Vec<String>> = match (&v.servers, &v.role) {
                (Some(list), None) if !list.is_empty() => {
                    let mut m = Vec::new();
                    let mut ok = true;
                    for (j, s) in list.iter().enumerate().take(MAX_SERVERS) {
                        match self.server_ref(s, &format!("{base}.servers[{j}]")) {
                            Some(h) if !m.contains(&h) => m.push(h),
                            Some(_) => {}
                            None => ok = false,
                        }
                    }
                    ok.then_some(m)
                }
                (None, Some(r)) => self.role_ref(r, &format!("{base}.role")).map(|r| {
                    servers
                        .iter()
                        .filter(|s| s.role == r)
                        .map(|s| s.hostname.clone())
                        .collect()
                }),
                _ => {
                    self.err(
                        span,
                        &base,
                        PlanErrorKind::Shape(
                            "set exactly one of servers = [\"HOST\", ...] or role = \"ROLE\""
                                .to_string(),
                        ),
                    );
                    None
                }
            };
            let ports = match &v.ports {
                Some(p) => self.ports(self.src, p, &format!("{base}.ports")),
                None => Some(Vec::new()),
            };
            // A virtual IP fronts a few services of its members (each port is probed when
            // the batch is swept): at most MAX_VIP_PORTS.
            let ports = match (ports, &v.ports) {
                (Some(r), Some(p)) if ports::count(&r) > MAX_VIP_PORTS => {
                    self.err(
                        p.span(),
                        format!("{base}.ports"),
                        PlanErrorKind::TooMany {
                            what: "ports on one virtual IP",
                            found: ports::count(&r),
                            max: MAX_VIP_PORTS,
                        },
                    );
                    None
                }
                (r, _) => r,
            };
            if let (Some(address), Some(members), Some(ports)) = (address, members, ports) {
                out.push(VirtualIp {
                    name,
                    address,
                    members,
                    ports,
                    protocol: v.protocol.unwrap_or_default(),
                });
            }
        }
        out
    }

    fn port_value(&mut self, v: Option<Spanned<i64>>, field: &str, default: u16) -> u16 {
        let Some(v) = v else { return default };
        match u16::try_from(*v.get_ref()) {
            Ok(p) if p != 0 => p,
            _ => {
                self.err(v.span(), field, PlanErrorKind::PortOutOfRange(*v.get_ref()));
                default
            }
        }
    }

    fn management(&mut self, m: toml_in::RawManagement) -> Management {
        let mut sources: Vec<IpNet> = Vec::new();
        for (i, s) in m.sources.iter().enumerate() {
            let field = format!("management.sources[{i}]");
            if self.too_many(i, s.span(), &field, "management sources") {
                break;
            }
            match parse_cidr(s.get_ref()) {
                Ok(net) if sources.contains(&net) => {
                    let first = self.errs.location(self.src, s.span().start);
                    self.err(
                        s.span(),
                        &field,
                        PlanErrorKind::Duplicate {
                            what: "management source",
                            value: net.to_string(),
                            first,
                        },
                    );
                }
                Ok(net) => sources.push(net),
                Err(reason) => self.err(
                    s.span(),
                    &field,
                    PlanErrorKind::InvalidCidr {
                        value: short(s.get_ref()),
                        reason,
                    },
                ),
            }
        }
        Management {
            sources,
            ssh_port: self.port_value(m.ssh_port, "management.ssh_port", 22),
            agent_port: self.port_value(m.agent_port, "management.agent_port", 7444),
        }
    }

    /// Global thresholds (defaults overridden by `[thresholds]`) and, per role, the global
    /// ones overridden by `[thresholds.roles.ROLE]`.
    fn thresholds(
        &mut self,
        t: &toml_in::RawThresholds,
    ) -> (Thresholds, BTreeMap<String, Thresholds>) {
        let global = self.threshold_values(Thresholds::default(), t, "thresholds");
        let mut roles = BTreeMap::new();
        for (name, raw) in t.roles.iter().flatten() {
            let field = format!("thresholds.roles.{}", name.get_ref());
            if raw.get_ref().roles.is_some() {
                self.err(
                    raw.span(),
                    format!("{field}.roles"),
                    PlanErrorKind::Shape(
                        "role thresholds cannot have roles of their own: remove this table"
                            .to_string(),
                    ),
                );
            }
            let values = self.threshold_values(global, raw.get_ref(), &field);
            if let Some(role) = self.role_ref(name, &field) {
                roles.insert(role, values);
            }
        }
        (global, roles)
    }

    fn threshold_values(
        &mut self,
        base: Thresholds,
        t: &toml_in::RawThresholds,
        prefix: &str,
    ) -> Thresholds {
        let mut out = base;
        let table: [ThresholdRule<'_>; 9] = [
            (
                &t.min_randread_iops,
                "min_randread_iops",
                &mut out.min_randread_iops,
                1,
                10_000_000,
            ),
            (
                &t.min_randwrite_iops,
                "min_randwrite_iops",
                &mut out.min_randwrite_iops,
                1,
                10_000_000,
            ),
            (
                &t.max_fdatasync_p99_us,
                "max_fdatasync_p99_us",
                &mut out.max_fdatasync_p99_us,
                10,
                10_000_000,
            ),
            (
                &t.min_bandwidth_mbit,
                "min_bandwidth_mbit",
                &mut out.min_bandwidth_mbit,
                1,
                800_000,
            ),
            (&t.min_cores, "min_cores", &mut out.min_cores, 1, 4096),
            (
                &t.min_memory_mib,
                "min_memory_mib",
                &mut out.min_memory_mib,
                64,
                64 * 1024 * 1024,
            ),
            (
                &t.min_free_disk_gib,
                "min_free_disk_gib",
                &mut out.min_free_disk_gib,
                0,
                1024 * 1024,
            ),
            (
                &t.max_clock_skew_ms,
                "max_clock_skew_ms",
                &mut out.max_clock_skew_ms,
                1,
                60_000,
            ),
            (
                &t.report_max_age_minutes,
                "report_max_age_minutes",
                &mut out.report_max_age_minutes,
                1,
                7 * 24 * 60,
            ),
        ];
        for (v, name, slot, min, max) in table {
            let Some(v) = v else { continue };
            let value = *v.get_ref();
            if (min..=max).contains(&value) {
                *slot = value;
            } else {
                self.errs.push(
                    self.src,
                    v.span(),
                    format!("{prefix}.{name}"),
                    PlanErrorKind::ThresholdOutOfRange {
                        name,
                        value,
                        min,
                        max,
                    },
                );
            }
        }
        out
    }

    fn bandwidth(
        &mut self,
        raw: Vec<(usize, Spanned<toml_in::RawPair>)>,
        servers: &[Server],
        paths: &[RequiredPath],
    ) -> Vec<BandwidthPair> {
        // Lowest TCP port the required paths open from one server (hostname) to another.
        let plan_paths = Plan {
            batch: BatchInfo::default(),
            servers: servers.to_vec(),
            paths: paths.to_vec(),
            vips: Vec::new(),
            jump_host: None,
            management: Management::default(),
            thresholds: Thresholds::default(),
            role_thresholds: BTreeMap::new(),
            bandwidth: Vec::new(),
            packages: Vec::new(),
        };
        let mut path_port: HashMap<(String, String), u16> = HashMap::new();
        for p in plan_paths.expanded_paths() {
            if p.protocol == Proto::Tcp {
                let e = path_port
                    .entry((p.from.hostname.clone(), p.to.hostname.clone()))
                    .or_insert(p.port);
                *e = (*e).min(p.port);
            }
        }
        let mut out: Vec<BandwidthPair> = Vec::new();
        let mut first: HashMap<(String, String), Location> = HashMap::new();
        for (n, (i, p)) in raw.into_iter().enumerate() {
            let base = format!("bandwidth[{i}]");
            if self.too_many(n, p.span(), &base, "bandwidth pairs") {
                break;
            }
            let span = p.span();
            let from = self.server_ref(&p.get_ref().from, &format!("{base}.from"));
            let to = self.server_ref(&p.get_ref().to, &format!("{base}.to"));
            let (Some(from), Some(to)) = (from, to) else {
                continue;
            };
            if from == to {
                self.err(span, &base, PlanErrorKind::SelfPair(from));
                continue;
            }
            let here = self.errs.location(self.src, span.start);
            if let Some(f) = first.get(&(from.clone(), to.clone())) {
                self.err(
                    span,
                    &base,
                    PlanErrorKind::Duplicate {
                        what: "bandwidth pair",
                        value: format!("{from} -> {to}"),
                        first: f.clone(),
                    },
                );
                continue;
            }
            first.insert((from.clone(), to.clone()), here);
            let explicit = p.get_ref().port.clone();
            let port = match explicit {
                Some(v) => self.port_value(Some(v), &format!("{base}.port"), 0),
                None => match path_port.get(&(from.clone(), to.clone())) {
                    Some(&p) => p,
                    None => {
                        if !self.lenient_refs {
                            self.err(
                                span,
                                &base,
                                PlanErrorKind::NoBandwidthPort {
                                    from: from.clone(),
                                    to: to.clone(),
                                },
                            );
                        }
                        continue;
                    }
                },
            };
            out.push(BandwidthPair { from, to, port });
        }
        out
    }

    fn packages(&mut self, raw: Vec<(usize, Spanned<toml_in::RawPackage>)>) -> Vec<PackageFile> {
        let mut out: Vec<PackageFile> = Vec::new();
        let mut first: HashMap<String, Location> = HashMap::new();
        for (n, (i, p)) in raw.into_iter().enumerate() {
            let base = format!("packages[{i}]");
            if self.too_many(n, p.span(), &base, "package files") {
                break;
            }
            let span = p.span();
            let p = p.into_inner();
            let mut ok = true;
            let path = p.path.get_ref().clone();
            if let Err(reason) = check_path(&path).and_then(|()| {
                if path.ends_with('/') {
                    Err("a package entry is a file: remove the trailing '/'")
                } else {
                    Ok(())
                }
            }) {
                self.err(
                    p.path.span(),
                    format!("{base}.path"),
                    PlanErrorKind::InvalidPath {
                        value: short(&path),
                        reason,
                    },
                );
                ok = false;
            }
            let sha = p.sha256.get_ref();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.err(
                    p.sha256.span(),
                    format!("{base}.sha256"),
                    PlanErrorKind::InvalidSha256(short(sha)),
                );
                ok = false;
            }
            let kind = match p.kind {
                RawKind::App => {
                    if let Some(d) = &p.database {
                        self.err(
                            d.span(),
                            format!("{base}.database"),
                            PlanErrorKind::OnlyForBackup("database"),
                        );
                        ok = false;
                    }
                    if let Some(o) = &p.on_exists {
                        self.err(
                            o.span(),
                            format!("{base}.on_exists"),
                            PlanErrorKind::OnlyForBackup("on_exists"),
                        );
                        ok = false;
                    }
                    Some(PackageKind::App)
                }
                RawKind::DbBackup => {
                    let database = match &p.database {
                        None => {
                            self.err(
                                span.clone(),
                                format!("{base}.database"),
                                PlanErrorKind::MissingDatabase,
                            );
                            None
                        }
                        Some(d) => self.name(self.src, d, &format!("{base}.database")),
                    };
                    let on_exists = match &p.on_exists {
                        None => {
                            self.err(
                                span.clone(),
                                format!("{base}.on_exists"),
                                PlanErrorKind::MissingOnExists,
                            );
                            None
                        }
                        Some(o) => Some(*o.get_ref()),
                    };
                    match (database, on_exists) {
                        (Some(database), Some(on_exists)) => Some(PackageKind::DbBackup {
                            database,
                            on_exists,
                        }),
                        _ => None,
                    }
                }
            };
            let on = match &p.on {
                None => None,
                Some(e) => {
                    let r = self.endpoint(e, &format!("{base}.on"));
                    ok &= r.is_some();
                    r
                }
            };
            let key = format!("{path}\0{on:?}");
            let here = self.errs.location(self.src, p.path.span().start);
            if let Some(f) = first.get(&key) {
                self.err(
                    p.path.span(),
                    format!("{base}.path"),
                    PlanErrorKind::Duplicate {
                        what: "package file",
                        value: short(&path),
                        first: f.clone(),
                    },
                );
                ok = false;
            } else {
                first.insert(key, here);
            }
            if let (true, Some(kind)) = (ok, kind) {
                out.push(PackageFile {
                    path,
                    size: p.size,
                    sha256: sha.to_ascii_lowercase(),
                    kind,
                    on,
                });
            }
        }
        out
    }
}

/// One threshold key: its raw value, name, slot in the result, lowest and highest sane value.
type ThresholdRule<'a> = (
    &'a Option<Spanned<u64>>,
    &'static str,
    &'a mut u64,
    u64,
    u64,
);

/// A value shortened for an error message.
fn short(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(80).collect();
        t.push('…');
        t
    }
}

/// A plain unicast IPv4 or IPv6 address (loopback allowed, for tests and demos).
pub(crate) fn parse_address(s: &str) -> Option<IpAddr> {
    if s.len() > 64 {
        return None;
    }
    let a: IpAddr = s.parse().ok()?;
    let bad =
        a.is_unspecified() || a.is_multicast() || matches!(a, IpAddr::V4(v4) if v4.is_broadcast());
    (!bad).then_some(a)
}

/// RFC 1123 host name that is not an IP address: labels of letters, digits and '-', 1 to 63 characters, not starting or
/// ending with '-', 253 characters at most.
pub(crate) fn is_hostname(s: &str) -> bool {
    // An address in the hostname column is a swapped or shifted spreadsheet column.
    s.parse::<IpAddr>().is_err()
        && !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Identifier: 1 to 64 of letters, digits, '_', '-', '.'.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// An absolute, clean path.
fn check_path(p: &str) -> Result<(), &'static str> {
    if p.len() > MAX_PATH {
        return Err("longer than 4096 bytes");
    }
    if !p.starts_with('/') {
        return Err("write an absolute path starting with '/'");
    }
    if p.chars().any(char::is_control) {
        return Err("remove control characters");
    }
    if p.split('/').any(|c| c == "." || c == "..") {
        return Err("remove '.' and '..' components");
    }
    Ok(())
}

/// Collapses repeated '/' and drops a trailing one (except for "/").
fn normalize_dir(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// A network in CIDR notation with host bits zero; a bare address means a single host.
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net: IpNet = if s.contains('/') {
        s.parse().map_err(|_| {
            "write a network such as 10.20.0.0/24 or a single address such as 10.20.0.5".to_string()
        })?
    } else {
        let a: IpAddr = s.parse().map_err(|_| {
            "write a network such as 10.20.0.0/24 or a single address such as 10.20.0.5".to_string()
        })?;
        IpNet::from(a)
    };
    if net.prefix_len() == 0 {
        return Err(format!(
            "{net} lets every address reach SSH and the agent: name the management networks"
        ));
    }
    if net.trunc() != net {
        return Err(format!(
            "host bits are set: write the network {} (or the single host {}/{})",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_rules() {
        assert!(parse_cidr("10.0.0.0/24").is_ok());
        assert_eq!(parse_cidr("10.0.0.5").map(|n| n.prefix_len()), Ok(32));
        assert!(parse_cidr("10.0.0.5/24")
            .unwrap_err()
            .contains("10.0.0.0/24"));
        assert!(parse_cidr("0.0.0.0/0").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("fd00::/64").is_ok());
    }

    #[test]
    fn hostnames_and_paths() {
        assert!(is_hostname("soa-01.example.cn"));
        assert!(!is_hostname("-soa"));
        assert!(!is_hostname("soa_01"));
        assert!(check_path("/data/../etc").is_err());
        assert!(check_path("data").is_err());
        assert_eq!(normalize_dir("/data//pg/"), "/data/pg");
    }
}
