//! Backend detection and the read-only firewall checks `fw.single_backend`,
//! `fw.default_deny_in`, `fw.allowlist_ports` and `fw.mgmt_source`.

use std::collections::BTreeSet;

use ipnet::IpNet;
use preflight_core::evidence::facts::normalised;
use preflight_core::evidence::{DefaultPolicy, EvidenceStatus, FirewallBackend, FirewallFacts};
use preflight_core::net::{PortSpec, Proto};
use serde::Serialize;

use super::exec::{CommandRunner, Tool};
use super::render::ipt_sections;
use super::{AllowList, Backend, FirewallError, Listener, FORBIDDEN_PORTS, IPT_CHAIN, NFT_TABLE};

/// What was found about one backend on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendState {
    /// The backend.
    pub backend: Backend,
    /// Whether its tool is installed.
    pub installed: bool,
    /// Whether its systemd service is active (`None`: not asked, e.g. inside a namespace, or
    /// no systemctl).
    pub service_active: Option<bool>,
    /// Whether rules of this backend are loaded in the kernel.
    pub rules_loaded: bool,
    /// What was seen, for the evidence.
    pub detail: String,
}

impl BackendState {
    /// A backend counts as active when its service runs or its rules are loaded.
    pub fn active(&self) -> bool {
        self.service_active == Some(true) || self.rules_loaded
    }
}

/// Result of one firewall check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FwCheckResult {
    /// Check id (`fw.*`).
    pub check_id: &'static str,
    /// Outcome.
    pub status: EvidenceStatus,
    /// What the host has.
    pub observed: String,
    /// What the check expects.
    pub expected: String,
    /// Why, when not compliant.
    pub reason: Option<String>,
    /// The typed facts the evidence record signs (`fw.allowlist_ports` with the ruleset read).
    pub firewall: Option<FirewallFacts>,
}

/// One accept rule of a managed ruleset: `proto`/`port` from `sources` (empty: anywhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowRule {
    /// Protocol.
    pub proto: Proto,
    /// Port.
    pub port: u16,
    /// Sources; empty means from anywhere.
    pub sources: Vec<IpNet>,
}

impl AllowRule {
    /// The port with its protocol.
    pub fn spec(&self) -> PortSpec {
        PortSpec::single(self.proto, self.port)
    }
}

const COMPAT_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

fn service_active(runner: &CommandRunner, unit: &str) -> Option<bool> {
    // systemd units are host-wide; inside a test namespace they say nothing about it.
    if runner.netns().is_some() || !runner.has(Tool::Systemctl) {
        return None;
    }
    runner
        .run(Tool::Systemctl, &["is-active", "--quiet", unit])
        .ok()
        .map(|o| o.success())
}

fn any_active(runner: &CommandRunner, units: &[&str]) -> Option<bool> {
    let answers: Vec<Option<bool>> = units.iter().map(|u| service_active(runner, u)).collect();
    if answers.iter().all(Option::is_none) {
        None
    } else {
        Some(answers.contains(&Some(true)))
    }
}

fn iptables_is_nft(runner: &CommandRunner) -> bool {
    runner
        .run(Tool::Iptables, &["--version"])
        .map(|o| o.stdout.contains("nf_tables"))
        .unwrap_or(false)
}

fn ipt_has_rules(save: &str) -> bool {
    ipt_sections(save).iter().any(|(_, lines)| {
        lines.iter().any(|l| {
            l.starts_with("-A ")
                || (l.starts_with(':') && {
                    let mut w = l.split_whitespace();
                    let _chain = w.next();
                    matches!(w.next(), Some("DROP" | "REJECT"))
                })
        })
    })
}

/// Detects which backends are installed and active.
pub fn detect_backends(runner: &CommandRunner) -> Vec<BackendState> {
    let ipt_nft = runner.has(Tool::Iptables) && iptables_is_nft(runner);
    let tables: Vec<(String, String)> = if runner.has(Tool::Nft) {
        runner
            .run(Tool::Nft, &["list", "tables"])
            .map(|o| {
                o.stdout
                    .lines()
                    .filter_map(|l| {
                        let mut w = l.split_whitespace();
                        match (w.next(), w.next(), w.next()) {
                            (Some("table"), Some(f), Some(n)) => Some((f.to_owned(), n.to_owned())),
                            _ => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let is_firewalld = |n: &str| n == "firewalld";
    let is_compat = |f: &str, n: &str| ipt_nft && f != "inet" && COMPAT_TABLES.contains(&n);
    let native: Vec<String> = tables
        .iter()
        .filter(|(f, n)| !is_firewalld(n) && !is_compat(f, n))
        .map(|(f, n)| format!("{f} {n}"))
        .collect();

    let mut ipt_detail = Vec::new();
    let mut ipt_rules = false;
    for tool in [Tool::IptablesSave, Tool::Ip6tablesSave] {
        if let Ok(o) = runner.run(tool, &[]) {
            if ipt_has_rules(&o.stdout) {
                ipt_rules = true;
                ipt_detail.push(format!("{} lists rules", tool.name()));
            }
        }
    }
    if ipt_nft {
        ipt_detail.push("iptables is iptables-nft".to_owned());
    }

    let fwd_service = any_active(runner, &["firewalld"]);
    let fwd_table = tables.iter().any(|(_, n)| is_firewalld(n));
    vec![
        BackendState {
            backend: Backend::Nftables,
            installed: runner.has(Tool::Nft),
            service_active: service_active(runner, "nftables"),
            rules_loaded: !native.is_empty(),
            detail: format!("native nft tables: [{}]", native.join(", ")),
        },
        BackendState {
            backend: Backend::Iptables,
            installed: runner.has(Tool::IptablesSave),
            service_active: any_active(runner, &["iptables", "ip6tables", "netfilter-persistent"]),
            rules_loaded: ipt_rules,
            detail: ipt_detail.join("; "),
        },
        BackendState {
            backend: Backend::Firewalld,
            installed: runner.has(Tool::FirewallCmd),
            service_active: fwd_service,
            rules_loaded: fwd_table,
            detail: if fwd_table {
                "nft table firewalld present".to_owned()
            } else {
                String::new()
            },
        },
    ]
}

/// The backend to manage, from what [`detect_backends`] found: the single active one; with
/// none active, nftables if installed, else iptables. Several active backends are refused
/// (`fw.single_backend` explains them): stop all but one first.
pub fn choose_backend(states: &[BackendState]) -> Result<Backend, FirewallError> {
    let active: Vec<&BackendState> = states.iter().filter(|s| s.active()).collect();
    match active.as_slice() {
        [one] if one.installed => Ok(one.backend),
        [one] => Err(FirewallError::InvalidInput(format!(
            "{} rules are loaded but its tool is not installed; install it to manage the firewall",
            one.backend
        ))),
        [] => [Backend::Nftables, Backend::Iptables]
            .into_iter()
            .find(|b| states.iter().any(|s| s.backend == *b && s.installed))
            .ok_or(FirewallError::ToolMissing("nft")),
        many => Err(FirewallError::InvalidInput(format!(
            "{} are all active; keep one backend (see fw.single_backend) before changing the firewall",
            many.iter().map(|s| s.backend.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// `fw.single_backend`: exactly one backend active.
pub fn check_single_backend(states: &[BackendState]) -> FwCheckResult {
    let active: Vec<String> = states
        .iter()
        .filter(|s| s.active())
        .map(|s| s.backend.to_string())
        .collect();
    let observed = states
        .iter()
        .map(|s| {
            format!(
                "{}: installed={} service_active={} rules_loaded={}{}",
                s.backend,
                s.installed,
                s.service_active
                    .map_or("unknown".to_owned(), |b| b.to_string()),
                s.rules_loaded,
                if s.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.detail)
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let (status, reason) = match active.len() {
        1 => (EvidenceStatus::Compliant, None),
        0 => (
            EvidenceStatus::NonCompliant,
            Some("no firewall backend is active: apply the firewall plan".to_owned()),
        ),
        _ => (
            EvidenceStatus::NonCompliant,
            Some(format!(
                "{} are all active: their rules all apply; keep one and stop the others",
                active.join(", ")
            )),
        ),
    };
    FwCheckResult {
        check_id: "fw.single_backend",
        status,
        observed,
        expected: "exactly one of firewalld, nftables, iptables active".to_owned(),
        reason,
        firewall: None,
    }
}

/// The blocks of `chain NAME { ... }` in `nft list` output: (name, lines).
fn nft_chains(text: &str) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    let mut table = String::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("chain ") {
            current = Some((rest.trim_end_matches('{').trim().to_owned(), Vec::new()));
        } else if line == "}" {
            if let Some((name, lines)) = current.take() {
                out.push((table.clone(), name, lines));
            }
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line.to_owned());
        }
    }
    out
}

fn parse_items(tokens: &[&str], i: usize) -> Vec<String> {
    match tokens.get(i) {
        Some(&"{") => tokens[i + 1..]
            .iter()
            .take_while(|t| **t != "}")
            .map(|t| t.trim_end_matches(',').to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        Some(t) => vec![(*t).to_owned()],
        None => Vec::new(),
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// Accept rules of `table inet preflight` from `nft list table inet preflight` output.
pub fn parse_nft_allow_rules(text: &str) -> Vec<AllowRule> {
    let mut out = Vec::new();
    for (_, _, lines) in nft_chains(text) {
        for line in lines {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            if tokens.last() != Some(&"accept") || tokens.contains(&"sport") {
                continue;
            }
            let Some(d) = tokens.iter().position(|t| *t == "dport") else {
                continue;
            };
            let Some(proto) = d.checked_sub(1).and_then(|p| tokens[p].parse().ok()) else {
                continue;
            };
            let sources: Vec<IpNet> = tokens
                .iter()
                .position(|t| *t == "saddr")
                .map(|s| {
                    parse_items(&tokens, s + 1)
                        .iter()
                        .filter_map(|x| parse_net(x))
                        .collect()
                })
                .unwrap_or_default();
            for port in parse_items(&tokens, d + 1) {
                if let Ok(port) = port.parse::<u16>() {
                    out.push(AllowRule {
                        proto,
                        port,
                        sources: sources.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Accept rules of chain `PREFLIGHT-INPUT` from `iptables-save` output.
pub fn parse_ipt_allow_rules(save: &str) -> Vec<AllowRule> {
    let prefix = format!("-A {IPT_CHAIN} ");
    let mut out = Vec::new();
    for (_, lines) in ipt_sections(save)
        .into_iter()
        .filter(|(n, _)| n == "filter")
    {
        for line in lines.iter().filter(|l| l.starts_with(&prefix)) {
            let t: Vec<&str> = line.split_whitespace().collect();
            let arg = |flag: &str| {
                t.iter()
                    .position(|x| *x == flag)
                    .and_then(|i| t.get(i + 1))
                    .copied()
            };
            if arg("-j") != Some("ACCEPT") || arg("--sport").is_some() {
                continue;
            }
            let (Some(proto), Some(Ok(port))) = (
                arg("-p").and_then(|p| p.parse::<Proto>().ok()),
                arg("--dport").map(str::parse::<u16>),
            ) else {
                continue;
            };
            let sources = arg("-s").and_then(parse_net).into_iter().collect();
            out.push(AllowRule {
                proto,
                port,
                sources,
            });
        }
    }
    // One iptables rule per source: merge them back into one rule per port.
    let mut merged: Vec<AllowRule> = Vec::new();
    for r in out {
        match merged
            .iter_mut()
            .find(|m| m.proto == r.proto && m.port == r.port)
        {
            Some(m) if m.sources.is_empty() || r.sources.is_empty() => m.sources.clear(),
            Some(m) => m.sources.extend(r.sources),
            None => merged.push(r),
        }
    }
    merged
}

/// Input-policy facts of a ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputPolicy {
    /// An input chain drops what it does not accept (policy or final rule).
    pub default_deny: bool,
    /// Loopback accepted.
    pub lo_accepted: bool,
    /// Established/related accepted.
    pub established_accepted: bool,
    /// What was seen.
    pub observed: String,
}

/// Input policy of an nftables ruleset (`nft list ruleset`): some input base chain drops by
/// policy or by a final unconditional drop/reject, and accepts lo and established traffic.
pub fn nft_input_policy(ruleset: &str) -> InputPolicy {
    let mut best = InputPolicy::default();
    let mut seen = Vec::new();
    for (table, name, lines) in nft_chains(ruleset) {
        let Some(head) = lines.iter().find(|l| l.contains("hook input")) else {
            continue;
        };
        let policy_drop = head.contains("policy drop");
        let last = lines
            .iter()
            .rev()
            .find(|l| !l.contains("hook input"))
            .map(String::as_str)
            .unwrap_or("");
        let final_drop = matches!(last, "drop" | "reject") || last.starts_with("reject with");
        let lo = lines.iter().any(|l| {
            (l.starts_with("iif \"lo\"") || l.starts_with("iifname \"lo\""))
                && l.ends_with("accept")
        });
        let est = lines.iter().any(|l| {
            l.starts_with("ct state")
                && l.contains("established")
                && l.contains("related")
                && l.ends_with("accept")
        });
        seen.push(format!(
            "table {table} chain {name}: {}, lo {}, established {}",
            if policy_drop || final_drop {
                "drops by default"
            } else {
                "accepts by default"
            },
            if lo { "accepted" } else { "not accepted" },
            if est { "accepted" } else { "not accepted" }
        ));
        let candidate = InputPolicy {
            default_deny: policy_drop || final_drop,
            lo_accepted: lo,
            established_accepted: est,
            observed: String::new(),
        };
        let score = |p: &InputPolicy| {
            p.default_deny as u8 * 4 + p.lo_accepted as u8 + p.established_accepted as u8
        };
        if score(&candidate) > score(&best) {
            best = candidate;
        }
    }
    best.observed = if seen.is_empty() {
        "no input base chain".to_owned()
    } else {
        seen.join("; ")
    };
    best
}

/// Input policy of an `iptables-save` filter table (INPUT and `PREFLIGHT-INPUT`).
pub fn ipt_input_policy(save: &str) -> InputPolicy {
    let filter = ipt_sections(save)
        .into_iter()
        .find(|(n, _)| n == "filter")
        .map(|(_, l)| l)
        .unwrap_or_default();
    let policy = filter
        .iter()
        .find_map(|l| {
            l.strip_prefix(":INPUT ")
                .and_then(|r| r.split_whitespace().next())
        })
        .unwrap_or("ACCEPT")
        .to_owned();
    let chain_rules = |chain: &str| -> Vec<&String> {
        let p = format!("-A {chain} ");
        filter.iter().filter(|l| l.starts_with(&p)).collect()
    };
    let input = chain_rules("INPUT");
    let ours = chain_rules(IPT_CHAIN);
    let jumps_first = input
        .first()
        .is_some_and(|l| l.as_str() == format!("-A INPUT -j {IPT_CHAIN}"));
    let final_drop = |rules: &[&String], chain: &str| {
        rules.last().is_some_and(|l| {
            *l == &format!("-A {chain} -j DROP") || *l == &format!("-A {chain} -j REJECT")
        })
    };
    let relevant: Vec<&String> = input
        .iter()
        .chain(if jumps_first { ours.iter() } else { [].iter() })
        .copied()
        .collect();
    let lo = relevant
        .iter()
        .any(|l| l.contains("-i lo ") && l.ends_with("-j ACCEPT"));
    let est = relevant
        .iter()
        .any(|l| l.contains("RELATED,ESTABLISHED") && l.ends_with("-j ACCEPT"));
    let deny = policy == "DROP"
        || final_drop(&input, "INPUT")
        || (jumps_first && final_drop(&ours, IPT_CHAIN));
    InputPolicy {
        default_deny: deny,
        lo_accepted: lo,
        established_accepted: est,
        observed: format!(
            "INPUT policy {policy}{}; lo {}; established {}",
            if jumps_first {
                format!(", first rule jumps to {IPT_CHAIN}")
            } else {
                String::new()
            },
            if lo { "accepted" } else { "not accepted" },
            if est { "accepted" } else { "not accepted" }
        ),
    }
}

fn check_default_deny(policy: &InputPolicy) -> FwCheckResult {
    let ok = policy.default_deny && policy.lo_accepted && policy.established_accepted;
    let mut missing = Vec::new();
    if !policy.default_deny {
        missing.push("input does not drop by default");
    }
    if !policy.lo_accepted {
        missing.push("loopback is not accepted");
    }
    if !policy.established_accepted {
        missing.push("established/related traffic is not accepted");
    }
    FwCheckResult {
        check_id: "fw.default_deny_in",
        status: if ok {
            EvidenceStatus::Compliant
        } else {
            EvidenceStatus::NonCompliant
        },
        observed: policy.observed.clone(),
        expected: "input policy drop/reject; lo and established,related accepted".to_owned(),
        reason: (!ok).then(|| format!("{}: apply the firewall plan", missing.join(", "))),
        firewall: None,
    }
}

fn describe(rules: &[AllowRule]) -> String {
    if rules.is_empty() {
        return "nothing allowed".to_owned();
    }
    rules
        .iter()
        .map(|r| {
            let from = if r.sources.is_empty() {
                "any".to_owned()
            } else {
                r.sources
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!("{}/{} from {from}", r.port, r.proto)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The evidence's name of a backend.
pub fn backend_fact(b: Backend) -> FirewallBackend {
    match b {
        Backend::Nftables => FirewallBackend::Nftables,
        Backend::Iptables => FirewallBackend::Iptables,
        Backend::Firewalld => FirewallBackend::Firewalld,
    }
}

/// The facts of a ruleset read on the host: what `fw.allowlist_ports` signs beside its text.
/// `policy` when the input policy could be read; the non-loopback `listeners` read.
pub fn ruleset_facts(
    backend: Backend,
    policy: Option<&InputPolicy>,
    rules: &[AllowRule],
    listeners: &[Listener],
) -> FirewallFacts {
    FirewallFacts {
        backend: backend_fact(backend),
        default_policy: policy.map(|p| {
            if p.default_deny {
                DefaultPolicy::Deny
            } else {
                DefaultPolicy::Accept
            }
        }),
        allowed: normalised(rules.iter().map(AllowRule::spec).collect()),
        listeners: Some(normalised(
            listeners
                .iter()
                .filter(|l| !l.addr.is_loopback())
                .map(|l| PortSpec::single(l.proto, l.port))
                .collect(),
        )),
    }
}

/// The facts of an allow-list made live by a confirmed change (what the confirmation signs):
/// the ports its rules accept, input dropped by default, no listeners read.
pub fn allow_list_facts(backend: Backend, list: &AllowList) -> FirewallFacts {
    FirewallFacts {
        backend: backend_fact(backend),
        default_policy: Some(DefaultPolicy::Deny),
        allowed: normalised(
            super::render::rules(list)
                .into_iter()
                .map(|(proto, port, _)| PortSpec::single(proto, port))
                .collect(),
        ),
        listeners: None,
    }
}

/// The `fw.allowlist_ports` check of a ruleset read from `backend`, with its typed facts
/// ([`ruleset_facts`]).
pub fn check_allowlist_ports(
    backend: Backend,
    policy: Option<&InputPolicy>,
    list: &AllowList,
    listeners: &[Listener],
    rules: &[AllowRule],
) -> FwCheckResult {
    let allowed: BTreeSet<PortSpec> = rules.iter().map(AllowRule::spec).collect();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for l in listeners.iter().filter(|l| !l.addr.is_loopback()) {
        if !seen.insert((l.proto, l.port)) {
            continue;
        }
        let name = format!(
            "{}/{}{}",
            l.port,
            l.proto,
            l.process
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
        if !list.allows(l.proto, l.port) {
            problems.push(format!(
                "listener {name} is not in the plan: plan it or stop it"
            ));
        } else if !allowed.contains(&PortSpec::single(l.proto, l.port)) {
            problems.push(format!(
                "planned listener {name} is not allowed by the ruleset: apply the plan"
            ));
        }
    }
    for port in [list.ssh_port, list.agent_port] {
        if !allowed.contains(&PortSpec::single(Proto::Tcp, port)) {
            problems.push(format!(
                "{port}/tcp (SSH or agent) is not allowed by the ruleset"
            ));
        }
    }
    for r in rules {
        if FORBIDDEN_PORTS.contains(&r.port) {
            problems.push(format!("{}/{} is open but must never be", r.port, r.proto));
        } else if !list.allows(r.proto, r.port) {
            problems.push(format!("{}/{} is allowed but not planned", r.port, r.proto));
        }
    }
    let expected_rules: Vec<AllowRule> = super::render::rules(list)
        .into_iter()
        .map(|(proto, port, sources)| AllowRule {
            proto,
            port,
            sources,
        })
        .collect();
    let listening: Vec<String> = listeners
        .iter()
        .filter(|l| !l.addr.is_loopback())
        .map(|l| format!("{}/{}", l.port, l.proto))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    FwCheckResult {
        check_id: "fw.allowlist_ports",
        status: if problems.is_empty() { EvidenceStatus::Compliant } else { EvidenceStatus::NonCompliant },
        observed: format!("listening: [{}]; allowed: {}", listening.join(", "), describe(rules)),
        expected: format!(
            "every non-loopback listener planned and allowed, or closed; never 21, 23, 111; allowed: {}",
            describe(&expected_rules)
        ),
        reason: (!problems.is_empty()).then(|| problems.join("; ")),
        firewall: Some(ruleset_facts(backend, policy, rules, listeners)),
    }
}

fn check_mgmt_source(list: &AllowList, rules: &[AllowRule]) -> FwCheckResult {
    let admin = list.admin_sources();
    let mut problems = Vec::new();
    for r in rules
        .iter()
        .filter(|r| r.proto == Proto::Tcp && (r.port == list.ssh_port || r.port == list.agent_port))
    {
        if r.sources.is_empty() {
            problems.push(format!("{}/tcp is allowed from anywhere", r.port));
        }
        for s in &r.sources {
            if !admin.iter().any(|a| a.contains(s)) {
                problems.push(format!(
                    "{}/tcp is allowed from {s}, outside the management sources",
                    r.port
                ));
            }
        }
    }
    let ssh_agent: Vec<AllowRule> = rules
        .iter()
        .filter(|r| r.proto == Proto::Tcp && (r.port == list.ssh_port || r.port == list.agent_port))
        .cloned()
        .collect();
    FwCheckResult {
        check_id: "fw.mgmt_source",
        status: if problems.is_empty() {
            EvidenceStatus::Compliant
        } else {
            EvidenceStatus::NonCompliant
        },
        observed: describe(&ssh_agent),
        expected: format!(
            "{}/tcp and {}/tcp from [{}] only",
            list.ssh_port,
            list.agent_port,
            admin
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        reason: (!problems.is_empty()).then(|| problems.join("; ")),
        firewall: None,
    }
}

fn unknown(check_id: &'static str, expected: &str, reason: String) -> FwCheckResult {
    FwCheckResult {
        check_id,
        status: EvidenceStatus::Unknown,
        observed: String::new(),
        expected: expected.to_owned(),
        reason: Some(reason),
        firewall: None,
    }
}

/// Runs the four firewall checks against the host (through `runner`) for `backend`.
pub fn audit(
    runner: &CommandRunner,
    backend: Backend,
    list: &AllowList,
    listeners: &[Listener],
) -> Vec<FwCheckResult> {
    let states = detect_backends(runner);
    let mut out = vec![check_single_backend(&states)];
    let (policy, rules) = match backend {
        Backend::Nftables => {
            let ruleset = runner
                .run_ok(Tool::Nft, &["list", "ruleset"])
                .map(|o| o.stdout);
            let table = runner.run(Tool::Nft, &["list", "table", "inet", NFT_TABLE]);
            let rules = match table {
                Ok(o) if o.success() => Ok(parse_nft_allow_rules(&o.stdout)),
                Ok(_) => Err(format!("table inet {NFT_TABLE} does not exist: the ruleset is not managed by preflight; apply the plan")),
                Err(e) => Err(e.to_string()),
            };
            (
                ruleset
                    .map(|r| nft_input_policy(&r))
                    .map_err(|e| e.to_string()),
                rules,
            )
        }
        Backend::Iptables => match runner.run_ok(Tool::IptablesSave, &[]) {
            Ok(o) => {
                let has_chain = o
                    .stdout
                    .lines()
                    .any(|l| l.starts_with(&format!(":{IPT_CHAIN} ")));
                let rules = if has_chain {
                    Ok(parse_ipt_allow_rules(&o.stdout))
                } else {
                    Err(format!("chain {IPT_CHAIN} does not exist: the ruleset is not managed by preflight; apply the plan"))
                };
                (Ok(ipt_input_policy(&o.stdout)), rules)
            }
            Err(e) => (Err(e.to_string()), Err(e.to_string())),
        },
        Backend::Firewalld => {
            let why = "auditing firewalld zones is not implemented; check `firewall-cmd --list-all` by hand".to_owned();
            (Err(why.clone()), Err(why))
        }
    };
    out.push(match &policy {
        Ok(p) => check_default_deny(p),
        Err(e) => unknown(
            "fw.default_deny_in",
            "input policy drop/reject; lo and established accepted",
            e.clone(),
        ),
    });
    match rules {
        Ok(r) => {
            out.push(check_allowlist_ports(
                backend,
                policy.as_ref().ok(),
                list,
                listeners,
                &r,
            ));
            out.push(check_mgmt_source(list, &r));
        }
        Err(e) => {
            out.push(unknown(
                "fw.allowlist_ports",
                "every non-loopback listener planned and allowed, or closed",
                e.clone(),
            ));
            out.push(unknown(
                "fw.mgmt_source",
                "SSH and agent port from management sources only",
                e,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::render::{render_iptables, render_nft, Family};
    use crate::firewall::PlannedPort;

    fn list() -> AllowList {
        AllowList {
            mgmt_sources: vec!["10.1.0.0/24".parse().expect("net")],
            ssh_port: 22,
            agent_port: 7444,
            controller_addrs: vec![],
            planned: vec![PlannedPort {
                port: 8080,
                proto: Proto::Tcp,
                sources: vec![],
                reason: "web".into(),
            }],
            current_listeners: vec![],
        }
    }

    fn listener(port: u16) -> Listener {
        Listener {
            proto: Proto::Tcp,
            addr: "0.0.0.0".parse().expect("ip"),
            port,
            process: None,
        }
    }

    #[test]
    fn rendered_rulesets_parse_back_and_pass_the_checks() {
        let l = list();
        let nft_rules = parse_nft_allow_rules(&render_nft(&l));
        let ipt_rules = parse_ipt_allow_rules(&render_iptables(&l, Family::V4, ""));
        for rules in [&nft_rules, &ipt_rules] {
            assert_eq!(rules.len(), 3, "{rules:?}");
            let r = check_allowlist_ports(
                Backend::Nftables,
                None,
                &l,
                &[listener(22), listener(8080)],
                rules,
            );
            assert_eq!(r.status, EvidenceStatus::Compliant, "{r:?}");
            assert_eq!(
                check_mgmt_source(&l, rules).status,
                EvidenceStatus::Compliant
            );
            let r = check_allowlist_ports(Backend::Nftables, None, &l, &[listener(3306)], rules);
            assert_eq!(r.status, EvidenceStatus::NonCompliant);
            assert!(r
                .reason
                .expect("reason")
                .contains("3306/tcp is not in the plan"));
        }
        let p = nft_input_policy(&render_nft(&l));
        assert!(
            p.default_deny && p.lo_accepted && p.established_accepted,
            "{p:?}"
        );
        let p = ipt_input_policy(&render_iptables(&l, Family::V4, ""));
        assert!(
            p.default_deny && p.lo_accepted && p.established_accepted,
            "{p:?}"
        );
    }

    #[test]
    fn open_ssh_and_accepting_policy_are_non_compliant() {
        let l = list();
        let rules = vec![AllowRule {
            proto: Proto::Tcp,
            port: 22,
            sources: vec![],
        }];
        let r = check_mgmt_source(&l, &rules);
        assert_eq!(r.status, EvidenceStatus::NonCompliant);
        let rules = vec![AllowRule {
            proto: Proto::Tcp,
            port: 22,
            sources: vec!["10.0.0.0/8".parse().expect("net")],
        }];
        assert_eq!(
            check_mgmt_source(&l, &rules).status,
            EvidenceStatus::NonCompliant
        );
        let rules = vec![AllowRule {
            proto: Proto::Tcp,
            port: 23,
            sources: vec![],
        }];
        assert!(
            check_allowlist_ports(Backend::Nftables, None, &l, &[], &rules)
                .reason
                .expect("reason")
                .contains("23/tcp is open but must never be")
        );
        let p = nft_input_policy("table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n");
        assert_eq!(check_default_deny(&p).status, EvidenceStatus::NonCompliant);
        let p = ipt_input_policy("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n");
        assert!(!p.default_deny);
    }

    #[test]
    fn single_backend_counts_active_ones() {
        let st = |b, active| BackendState {
            backend: b,
            installed: true,
            service_active: None,
            rules_loaded: active,
            detail: String::new(),
        };
        let one = [
            st(Backend::Nftables, true),
            st(Backend::Iptables, false),
            st(Backend::Firewalld, false),
        ];
        assert_eq!(check_single_backend(&one).status, EvidenceStatus::Compliant);
        let two = [
            st(Backend::Nftables, true),
            st(Backend::Iptables, true),
            st(Backend::Firewalld, false),
        ];
        let r = check_single_backend(&two);
        assert_eq!(r.status, EvidenceStatus::NonCompliant);
        assert!(r.reason.expect("reason").contains("nftables, iptables"));
        let none = [
            st(Backend::Nftables, false),
            st(Backend::Iptables, false),
            st(Backend::Firewalld, false),
        ];
        assert_eq!(
            check_single_backend(&none).status,
            EvidenceStatus::NonCompliant
        );
        assert_eq!(choose_backend(&one).ok(), Some(Backend::Nftables));
        assert_eq!(choose_backend(&none).ok(), Some(Backend::Nftables));
        assert!(choose_backend(&two).is_err());
        let fwd = [
            st(Backend::Nftables, false),
            st(Backend::Iptables, false),
            st(Backend::Firewalld, true),
        ];
        assert_eq!(choose_backend(&fwd).ok(), Some(Backend::Firewalld));
        let mut ipt_only = none.clone();
        ipt_only[0].installed = false;
        assert_eq!(choose_backend(&ipt_only).ok(), Some(Backend::Iptables));
    }
}
