//! Network readiness across hosts, through the real binaries (root only, `SKIP` otherwise):
//! three hosts on a bridge, each its own network namespace running an agent; the controller runs
//! in h1's namespace and the CLI talks to it there. nftables in h3 drops one port, resets
//! another and answers a third with ICMP host-unreachable; probes from h1 and h2 to h3 must
//! classify every port, a port served by an unrelated process is `open` (not `verified`), and
//! bandwidth runs between the namespaces both ways. The lab is removed on drop, also on failure.

use std::collections::BTreeMap;
use std::net::TcpListener;

use anyhow::{Context, Result};
use preflight_tests::cluster::lab_cluster;
use preflight_tests::netns::{root_available, with_lab, NetLab};

const P_OK: u16 = 18080;
const P_DROP: u16 = 18081;
const P_RESET: u16 = 18082;
const P_UNREACH: u16 = 18083;
const P_OTHER: u16 = 18084;

fn ruleset() -> String {
    format!(
        "table ip pf_e2e_network {{
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp dport {P_DROP} drop
    tcp dport {P_RESET} reject with tcp reset
    tcp dport {P_UNREACH} reject with icmp type host-unreachable
  }}
}}
"
    )
}

#[test]
fn probes_and_bandwidth_between_agents_in_network_namespaces() -> Result<()> {
    if let Some(why) = root_available() {
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    with_lab(3, run)
}

fn run(lab: &NetLab) -> Result<()> {
    let (h1, h2, h3) = (lab.host(1), lab.host(2), lab.host(3));
    let base = tempfile::tempdir()?;
    let (ctl, agents) = lab_cluster(lab, base.path())?;
    for (a, h) in agents.iter().zip([h1, h2, h3]) {
        let listen = ctl.wait_online(&a.id);
        assert_eq!(listen.ip().to_string(), h.ip.to_string(), "{}", a.id);
    }

    // h3: the firewall, and an unrelated service on P_OTHER (a socket of this test process,
    // made inside h3's namespace).
    let rules = tempfile::NamedTempFile::new()?;
    std::fs::write(rules.path(), ruleset())?;
    h3.exec("nft", &["-f", rules.path().to_str().context("utf-8 path")?])?;
    let h3_ip = h3.ip;
    let other = h3
        .run_in(move || Ok(TcpListener::bind((h3_ip, P_OTHER))?))?
        .join()
        .map_err(|_| anyhow::anyhow!("listener thread panicked"))??;
    std::thread::spawn(move || {
        for c in other.incoming() {
            drop(c);
        }
    });

    let ports = format!("{P_OK}-{P_OTHER}");
    let want: BTreeMap<u16, &str> = [
        (P_OK, "verified"),
        (P_DROP, "filtered"),
        (P_RESET, "refused"),
        (P_UNREACH, "unreachable"),
        (P_OTHER, "open"),
    ]
    .into();
    for (from, extra) in [("ns-h1", None), ("ns-h2", Some(h3.ip.to_string()))] {
        let mut args = vec![
            "probe",
            "--from",
            from,
            "--to",
            "ns-h3",
            "--ports",
            &ports,
            "--timeout",
            "1s",
        ];
        if let Some(a) = &extra {
            args.extend(["--to-addr", a.as_str()]);
        }
        let v = ctl.json(&args)?;
        assert_eq!(v["address"], h3.ip.to_string(), "{v}");
        let got: BTreeMap<u16, String> = v["ports"]
            .as_array()
            .context("ports")?
            .iter()
            .map(|p| {
                (
                    p["port"].as_u64().unwrap_or(0) as u16,
                    p["outcome"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let got: BTreeMap<u16, &str> = got.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(got, want, "probe from {from}: {v}");
        let other = v["ports"]
            .as_array()
            .context("ports")?
            .iter()
            .find(|p| p["port"] == P_OTHER)
            .context("P_OTHER")?;
        assert_eq!(other["listener"], "in_use", "{v}");
        assert!(
            other["note"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("pid {}", std::process::id())),
            "{v}"
        );
    }
    // An address that is not h3's is refused before anything is opened.
    let o = ctl
        .cli()
        .args([
            "probe",
            "--from",
            "ns-h1",
            "--to",
            "ns-h3",
            "--ports",
            "80",
            "--to-addr",
        ])
        .arg(h2.ip.to_string())
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("to_addr") && err.contains("invalid argument"),
        "{err}"
    );

    // Bandwidth between namespaces, both ways.
    for (from, reverse) in [("ns-h1", false), ("ns-h2", true)] {
        let mut args = vec![
            "bandwidth",
            "--from",
            from,
            "--to",
            "ns-h3",
            "--duration",
            "2",
            "--streams",
            "2",
        ];
        if reverse {
            args.push("--reverse");
        }
        let v = ctl.json(&args)?;
        let rep = &v["report"];
        assert!(rep["total_mbit_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
        assert_eq!(rep["streams"].as_array().map(Vec::len), Some(2), "{v}");
        assert!(rep["retransmits"].is_u64(), "{v}");
        assert!(
            v["address"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("{}:", h3.ip)),
            "{v}"
        );
        eprintln!(
            "bandwidth {from} {} ns-h3: {:.0} Mbit/s",
            if reverse { "<-" } else { "->" },
            rep["total_mbit_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    // The probe listeners were closed after each probe, not left for their TTL.
    let out = h3.exec("ss", &["-H", "-ltn"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    for p in [P_OK, P_DROP, P_RESET, P_UNREACH] {
        assert!(
            !text.contains(&format!(":{p} ")),
            "probe listener on {p} still open: {text}"
        );
    }
    drop(agents);
    drop(ctl);
    Ok(())
}
