//! A readiness sweep across network namespaces (root only, `SKIP` otherwise): three hosts on a
//! bridge, each running an agent; the plan requires web → app, app → db and web → db, and
//! nftables in the db host drops the port of web → db. That one path is a hard failure naming
//! the firewall and the customer; the other paths pass. The lab is removed on drop, also on
//! failure.

use anyhow::{Context, Result};
use preflight_tests::cluster::lab_cluster;
use preflight_tests::netns::{root_available, with_lab, NetLab};

const P_APP: u16 = 18090;
const P_DB: u16 = 18091;
const P_BLOCKED: u16 = 18092;

#[test]
fn sweep_in_namespaces_reports_the_path_nftables_blocks() -> Result<()> {
    if let Some(why) = root_available() {
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    with_lab(3, run)
}

fn run(lab: &NetLab) -> Result<()> {
    let (h1, h2, h3) = (lab.host(1), lab.host(2), lab.host(3));
    let base = tempfile::tempdir()?;
    let (ctl, _agents) = lab_cluster(lab, base.path())?;
    let rules = tempfile::NamedTempFile::new()?;
    std::fs::write(
        rules.path(),
        format!(
            "table ip pf_e2e_sweep {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {P_BLOCKED} drop\n  }}\n}}\n"
        ),
    )?;
    h3.exec("nft", &["-f", rules.path().to_str().context("utf-8 path")?])?;

    let plan = format!(
        "[batch]\nproject = \"ns\"\nbatch = \"ns-b\"\n\n[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\n\n\
[[servers]]\naddress = \"{}\"\nhostname = \"ns-h1\"\nrole = \"web\"\n\n\
[[servers]]\naddress = \"{}\"\nhostname = \"ns-h2\"\nrole = \"app\"\napps = [{{ name = \"app\", ports = \"{P_APP}\" }}]\n\n\
[[servers]]\naddress = \"{}\"\nhostname = \"ns-h3\"\nrole = \"db\"\napps = [{{ name = \"db\", ports = \"{P_DB},{P_BLOCKED}\" }}]\n\n\
[[paths]]\nfrom = {{ role = \"web\" }}\nto = {{ role = \"app\" }}\nports = \"{P_APP}\"\n\n\
[[paths]]\nfrom = {{ role = \"app\" }}\nto = {{ role = \"db\" }}\nports = \"{P_DB}\"\n\n\
[[paths]]\nfrom = {{ role = \"web\" }}\nto = {{ role = \"db\" }}\nports = \"{P_BLOCKED}\"\n",
        h1.ip, h2.ip, h3.ip
    );
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("plan.toml");
    std::fs::write(&p, plan)?;
    let o = ctl
        .cli()
        .args([
            "sweep",
            "ns-b",
            "--skip",
            "disk",
            "--skip",
            "bandwidth",
            "--output",
            "json",
            "--plan",
        ])
        .arg(&p)
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .with_context(|| String::from_utf8_lossy(&o.stderr).to_string())?;
    assert_eq!(o.status.code(), Some(3), "{v}");
    let findings = v["findings"].as_array().context("findings")?;
    let paths: Vec<_> = findings
        .iter()
        .filter(|f| f["check"].as_str().unwrap_or("").starts_with("path:"))
        .collect();
    assert_eq!(paths.len(), 3, "{v}");
    for f in &paths {
        let key = (
            f["server"].as_str().unwrap_or(""),
            f["check"].as_str().unwrap_or(""),
        );
        if key == ("ns-h1", &*format!("path:ns-h3:{P_BLOCKED}")) {
            assert_eq!(f["verdict"], "hard", "{f}");
            assert_eq!(f["party"], "customer", "{f}");
            assert_eq!(f["reason"], "network_ports", "{f}");
            let m = f["message"].as_str().unwrap_or("");
            assert!(
                m.contains("filtered") && m.contains(&h3.ip.to_string()),
                "{f}"
            );
            assert!(
                f["fix"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("tcp port {P_BLOCKED} from {}", h1.ip)),
                "{f}"
            );
        } else {
            assert_eq!(f["verdict"], "pass", "{f}");
        }
    }
    // The blocked path is the only hard failure; the planned ports themselves are free.
    assert_eq!(v["hard"], 1, "{v}");
    assert_eq!(
        v["skipped"],
        serde_json::json!(["bandwidth", "disk"]),
        "{v}"
    );
    for port in [P_APP, P_DB, P_BLOCKED] {
        let c = format!("port:{port}/tcp");
        let f = findings
            .iter()
            .find(|f| f["check"] == c.as_str())
            .context(c)?;
        assert_eq!(f["verdict"], "pass", "{f}");
    }
    // The HTML report draws the path matrix with the blocked cell.
    let html = ctl.run(&["report", "--batch", "ns-b", "--format", "html"])?;
    assert!(
        html.contains("Required paths") && html.contains("class=\"m hard\""),
        "{html}"
    );
    assert!(html.contains(&format!("ns-h3:{P_BLOCKED}")), "{html}");
    Ok(())
}
