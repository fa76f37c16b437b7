//! Day-2 operations against a real controller: `/metrics` parses as Prometheus text format and
//! counts what happened, `preflight status` shows the fleet with its outdated agents, agents
//! report their version and `preflight agents` flags the outdated ones, and `serve
//! --log-format json` logs JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use preflight_proto::v1 as pb;
use preflight_tests::cluster::{bin, eventually, Agent, Controller, Proc};

// ---------------------------------------------------------------------------------------------
// A strict parser of the Prometheus text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format), written
// against the spec rather than against our output: it rejects what Prometheus would reject.

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// The family a sample belongs to (histogram and summary samples carry suffixes).
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut helps = BTreeSet::new();
    let mut seen_families = BTreeSet::new();
    let mut series = BTreeSet::new();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a line feed".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            let mut parts = rest.splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| at("HELP without a name".into()))?;
                    if !is_metric_name(name) || !helps.insert(name.to_string()) {
                        return Err(at("bad or repeated HELP".into()));
                    }
                }
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| at("TYPE without a name".into()))?;
                    let kind = parts
                        .next()
                        .ok_or_else(|| at("TYPE without a type".into()))?;
                    if !is_metric_name(name) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if seen_families.contains(name) {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                    if e.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("repeated TYPE".into()));
                    }
                }
                _ => {} // a comment
            }
            continue;
        }
        // name{labels} value [timestamp]
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let consumed;
            loop {
                let Some(&(i, c)) = chars.peek() else {
                    return Err(at("unterminated label set".into()));
                };
                if c == '}' {
                    consumed = i + 1;
                    break;
                }
                let name_start = i;
                while matches!(chars.peek(), Some(&(_, c)) if c != '=') {
                    chars.next();
                }
                let Some((eq, _)) = chars.next() else {
                    return Err(at("label without =".into()));
                };
                let lname = &r[name_start..eq];
                if !is_label_name(lname) {
                    return Err(at(format!("bad label name {lname:?}")));
                }
                if chars.next().map(|x| x.1) != Some('"') {
                    return Err(at("label value must be quoted".into()));
                }
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err(at("unterminated label value".into())),
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next().map(|x| x.1) {
                            Some('\\') => v.push('\\'),
                            Some('"') => v.push('"'),
                            Some('n') => v.push('\n'),
                            other => return Err(at(format!("bad escape {other:?}"))),
                        },
                        Some((_, '\n')) => return Err(at("raw line feed in value".into())),
                        Some((_, c)) => v.push(c),
                    }
                }
                if labels.insert(lname.to_string(), v).is_some() {
                    return Err(at(format!("repeated label {lname}")));
                }
                match chars.peek().map(|x| x.1) {
                    Some(',') => {
                        chars.next();
                    }
                    Some('}') => {}
                    _ => return Err(at("expected , or } after a label".into())),
                }
            }
            rest = &r[consumed..];
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("expected one space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &e.types).to_string();
        let kind = e
            .types
            .get(&family)
            .cloned()
            .unwrap_or_else(|| "untyped".into());
        if kind == "counter" && (value < 0.0 || value.is_nan()) {
            return Err(at("negative counter".into()));
        }
        if kind == "histogram" && name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(at("histogram bucket without le".into()));
        }
        seen_families.insert(family);
        let key = format!("{name}{labels:?}");
        if !series.insert(key) {
            return Err(at("duplicate series".into()));
        }
        e.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    // Histograms: per label set, buckets are cumulative, end with +Inf, and +Inf == _count.
    for (fam, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts = BTreeMap::new();
        let mut sums = BTreeSet::new();
        for s in &e.samples {
            let mut base = s.labels.clone();
            base.remove("le");
            let key = format!("{base:?}");
            if s.name == format!("{fam}_bucket") {
                let le = parse_value(&s.labels["le"])?;
                groups.entry(key).or_default().push((le, s.value));
            } else if s.name == format!("{fam}_count") {
                counts.insert(key, s.value);
            } else if s.name == format!("{fam}_sum") {
                sums.insert(key);
            }
        }
        for (key, buckets) in groups {
            let mut prev = (f64::NEG_INFINITY, 0.0);
            for &(le, v) in &buckets {
                if le <= prev.0 || v < prev.1 {
                    return Err(format!("{fam}{key}: buckets not increasing at le={le}"));
                }
                prev = (le, v);
            }
            if prev.0 != f64::INFINITY {
                return Err(format!("{fam}{key}: no +Inf bucket"));
            }
            if counts.get(&key) != Some(&prev.1) {
                return Err(format!("{fam}{key}: _count differs from the +Inf bucket"));
            }
            if !sums.contains(&key) {
                return Err(format!("{fam}{key}: no _sum"));
            }
        }
    }
    Ok(e)
}

impl Exposition {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

#[test]
fn the_strict_parser_rejects_what_prometheus_rejects() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{m=\"q\\\"\"} 3\n";
    assert!(parse_exposition(ok).is_ok());
    for bad in [
        "a_total 1",                // no final line feed
        "# TYPE a counter\na -1\n", // negative counter
        "a{m=q} 1\n",               // unquoted value
        "a{m=\"x\",m=\"y\"} 1\n",   // repeated label
        "a 1\na 2\n",               // duplicate series
        "a 1\n# TYPE a gauge\n",    // TYPE after samples
        "9a 1\n",                   // bad name
        "a  1\n",                   // two spaces
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_sum 0\n", // no +Inf
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------

fn curl(url: &str, pin: &str) -> String {
    let o = Command::new("curl")
        .args(["-fsS", "-k", "--pinnedpubkey", pin, url])
        .output()
        .expect("curl runs (scripts/test installs it)");
    assert!(
        o.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn pubkey_pin(ctl: &Controller) -> String {
    let v = ctl.json(&["token", "create", "--ttl", "1m"]).unwrap();
    v["controller_pubkey_sha256"].as_str().unwrap().to_string()
}

/// Enrolls an agent speaking the Registry protocol directly, reporting `version`, and sends
/// one heartbeat: an agent of another release, as after a controller upgrade.
fn old_agent_heartbeat(ctl: &Controller, id: &str, version: &str) {
    let token = ctl.join_token("5m").unwrap();
    preflight_pki::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = ctl.addr.to_string();
        let (tls, _) = preflight_pki::pinned_client_config(&ctl.pin).unwrap();
        let ch = preflight_pki::transport::connect(
            &addr,
            tls,
            preflight_pki::controller_server_name(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let (csr_pem, key_pem) = preflight_pki::make_csr(id).unwrap();
        let r = pb::registry_client::RegistryClient::new(ch)
            .enroll(pb::EnrollRequest {
                join_token: token,
                name: id.into(),
                csr_pem,
                agent_version: version.into(),
                hostname: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let ident = preflight_pki::Identity {
            cert_pem: r.cert_pem,
            key_pem,
        };
        let tls = preflight_pki::client_config(&r.ca_pem, Some(&ident)).unwrap();
        let ch = preflight_pki::transport::connect(
            &addr,
            tls,
            preflight_pki::controller_server_name(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        pb::registry_client::RegistryClient::new(ch)
            .heartbeat(pb::HeartbeatRequest {
                agent_version: version.into(),
                hostname: id.into(),
                addresses: vec![],
                listen_addr: "127.0.0.1:1".into(),
            })
            .await
            .unwrap();
    });
}

#[test]
fn metrics_parse_and_status_shows_the_fleet_and_outdated_agents() {
    // Offline after three intervals: long enough that the one-heartbeat agent below stays
    // online through the checks.
    let ctl = Controller::start(&["--heartbeat-interval", "5s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "ops-01", "127.0.0.1").unwrap();
    a.start().unwrap();
    ctl.wait_online("ops-01");
    old_agent_heartbeat(&ctl, "old-01", "0.0.1");
    let pin = pubkey_pin(&ctl);

    // Status: version, uptime, counts, the outdated agent.
    let s = ctl.json(&["status"]).unwrap();
    let version = ctl.json(&["whoami"]).unwrap()["controller_version"].clone();
    assert_eq!(s["controller_version"], version, "{s}");
    assert_eq!(s["agents_total"], 2, "{s}");
    assert_eq!(s["agents_online"], 2, "{s}");
    assert_eq!(s["agents_offline"], 0, "{s}");
    assert_eq!(s["outdated"][0]["id"], "old-01", "{s}");
    assert_eq!(s["outdated"][0]["version"], "0.0.1", "{s}");
    assert_eq!(s["outdated"].as_array().unwrap().len(), 1, "{s}");
    let human = ctl.run(&["status"]).unwrap();
    assert!(human.contains("2 enrolled: 2 online, 0 offline"), "{human}");
    assert!(human.contains("old-01  0.0.1"), "{human}");

    // The agent list flags it too.
    let agents = ctl.agents().unwrap();
    let outdated: Vec<_> = agents
        .iter()
        .filter(|a| a["outdated"] == true)
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(outdated, ["old-01"]);

    // Metrics: parses strictly, and counts what happened.
    let m = parse_exposition(&curl(&format!("{}/metrics", ctl.url), &pin))
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}"));
    assert_eq!(m.get("preflight_agents", &[("state", "online")]), Some(2.0));
    assert_eq!(
        m.get("preflight_agents", &[("state", "offline")]),
        Some(0.0)
    );
    assert_eq!(m.get("preflight_agents_outdated", &[]), Some(1.0));
    assert_eq!(
        m.get("preflight_sweeps", &[("state", "running")]),
        Some(0.0)
    );
    assert_eq!(
        m.get(
            "preflight_build_info",
            &[("version", version.as_str().unwrap())]
        ),
        Some(1.0)
    );
    let list = m
        .get(
            "preflight_rpc_requests_total",
            &[("method", "preflight.v1.Controller/ListAgents")],
        )
        .expect("ListAgents counted");
    assert!(list >= 1.0, "{list}");
    let hb = m
        .get(
            "preflight_rpc_duration_seconds_count",
            &[("method", "preflight.v1.Registry/Heartbeat")],
        )
        .expect("heartbeats timed");
    assert!(hb >= 1.0);
    assert_eq!(m.types["preflight_rpc_duration_seconds"], "histogram");

    // An error is counted as one: an unknown agent's inventory.
    assert!(ctl.run(&["inventory", "nobody"]).is_err());
    let m = parse_exposition(&curl(&format!("{}/metrics", ctl.url), &pin)).unwrap();
    assert!(
        m.get(
            "preflight_rpc_errors_total",
            &[("method", "preflight.v1.Controller/GetAgentInventory")]
        ) >= Some(1.0)
    );

    // The agent goes away: offline within three heartbeat intervals.
    drop(a.proc.take());
    eventually(Duration::from_secs(30), "ops-01 offline", || {
        let a = ctl.agents().ok()?;
        a.iter()
            .any(|a| a["id"] == "ops-01" && a["online"] == false)
            .then_some(())
    });
    let s = ctl.json(&["status"]).unwrap();
    assert!(s["agents_offline"].as_u64().unwrap() >= 1, "{s}");
}

#[test]
fn agent_binary_and_its_sha256_are_served_and_match() {
    let ctl = Controller::start(&[]).unwrap();
    let pin = pubkey_pin(&ctl);
    let arch = std::env::consts::ARCH;
    let sha = curl(&format!("{}/agent/linux-{arch}.sha256", ctl.url), &pin);
    let o = Command::new("sha256sum")
        .arg(bin("preflight-agent"))
        .output()
        .unwrap();
    let want = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        sha.split_whitespace().next(),
        want.split_whitespace().next(),
        "{sha}"
    );
    // Unknown targets are refused with a reason.
    let o = Command::new("curl")
        .args(["-sS", "-k", "--pinnedpubkey", &pin, "-w", "%{http_code}"])
        .arg(format!("{}/agent/windows-x86", ctl.url))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(
        body.ends_with("404") && body.contains("unknown agent target"),
        "{body}"
    );
    // The pin is stable across a restart: the key is in the data directory.
    let data = ctl.data();
    let Controller {
        dir: _keep, proc, ..
    } = ctl;
    drop(proc);
    let mut child = Proc(
        Command::new(bin("preflight"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data",
            ])
            .arg(&data)
            .env("PREFLIGHT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // With --log-format json every log line is a JSON object with fields.
    let stderr = child.0.stderr.take().unwrap();
    let mut addr = None;
    let mut json_lines = 0;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("controller listening on ") {
            addr = rest.split_whitespace().next().map(str::to_string);
        } else {
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
            if v["fields"]["message"] == "controller listening" {
                assert!(v["fields"]["version"].is_string(), "{line}");
            }
            json_lines += 1;
        }
        if addr.is_some() && json_lines > 0 {
            break;
        }
    }
    let addr = addr.expect("controller listening line");
    assert_eq!(curl(&format!("https://{addr}/healthz"), &pin), "ok\n");
}
