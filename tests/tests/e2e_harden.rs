//! Remote hardening end to end with the real binaries on loopback: an agent whose catalog root
//! is a copy of the Debian 12 fixture; audit finds the seeded violations, apply fixes them,
//! verify is compliant, rollback restores every byte; the exported evidence verifies offline,
//! and any tampering with it is detected.

#[path = "../../crates/preflight-harden/tests/support/tree.rs"]
mod tree;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use preflight_core::evidence::{self, EvidenceBundle};
use preflight_tests::cluster::{bin, Agent, Controller};

fn fixture_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/preflight-harden/tests/fixtures")
        .join(name)
}

fn snapshot(dir: &Path) -> Result<BTreeMap<String, String>> {
    tree::snapshot(dir, evidence::sha256_hex)
}

/// Starts `preflight-agent run --harden-root ROOT` (what only a local admin can set).
fn start_with_root(agent: &mut Agent, root: &Path) -> Result<()> {
    agent.start_with(&[OsStr::new("--harden-root"), root.as_os_str()])
}

fn debian_root(base: &Path) -> Result<PathBuf> {
    let root = base.join("root");
    tree::copy_fixture(&fixture_src("debian12"), &root)?;
    Ok(root)
}

/// A controller and one agent `id` (on 127.0.0.1) whose catalog root is a fresh copy of the
/// Debian 12 fixture; the tree and the agent's state live under `base`.
struct OneHost {
    ctl: Controller,
    base: tempfile::TempDir,
    root: PathBuf,
    _agent: Agent,
}

fn one_host(id: &str) -> Result<OneHost> {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"])?;
    let base = tempfile::tempdir()?;
    let root = debian_root(base.path())?;
    let mut agent = Agent::enroll(&ctl, base.path(), id, "127.0.0.1")?;
    start_with_root(&mut agent, &root)?;
    ctl.wait_online(id);
    Ok(OneHost {
        ctl,
        base,
        root,
        _agent: agent,
    })
}

fn statuses(v: &serde_json::Value) -> BTreeMap<String, String> {
    v["results"][0]["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

const SEEDED: &[&str] = &[
    "acct.pass_max_days",
    "auth.pw_hash",
    "ssh.permit_root_login",
    "ssh.max_auth_tries",
    "perm.umask",
];

fn not_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() != 0 }
}

#[test]
fn harden_apply_verify_rollback_and_evidence_through_the_cli() -> Result<()> {
    if not_root() {
        eprintln!(
            "SKIP: the fixture's files must be owned by root (chown 0:0) for the checks to pass"
        );
        return Ok(());
    }
    // `_agent` is bound so the agent lives to the end of the test.
    let OneHost {
        ctl,
        base,
        root,
        _agent,
    } = one_host("web-01")?;
    let before = snapshot(&root)?;

    // Audit finds the seeded violations and changes nothing.
    let audit = ctl.audit_json(&["harden", "audit", "--agent", "web-01"])?;
    let st = statuses(&audit);
    for id in SEEDED {
        assert_eq!(
            st.get(*id).map(String::as_str),
            Some("non_compliant"),
            "{id}: {st:?}"
        );
    }
    assert!(
        audit["results"][0]["evidence_appended"]
            .as_u64()
            .unwrap_or(0)
            >= st.len() as u64
    );
    assert_eq!(snapshot(&root)?, before, "audit changed the tree");

    // Plan shows diffs and writes nothing.
    let plan = ctl.json(&[
        "harden",
        "plan",
        "--agent",
        "web-01",
        "--check",
        "ssh.max_auth_tries",
    ])?;
    let diff = plan["results"][0]["checks"][0]["diff"]
        .as_str()
        .unwrap_or("");
    assert!(diff.contains("MaxAuthTries"), "{plan}");
    assert_eq!(snapshot(&root)?, before, "plan changed the tree");

    // Apply without --yes and without a terminal is refused.
    let o = ctl
        .cli()
        .args(["harden", "apply", "--agent", "web-01"])
        .output()?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--yes"));
    assert_eq!(snapshot(&root)?, before);

    // Apply fixes them; the verify that follows is compliant.
    let applied = ctl.json(&["harden", "apply", "--agent", "web-01", "--yes"])?;
    let vst = statuses(&applied["verify"]);
    for id in SEEDED {
        assert_eq!(
            vst.get(*id).map(String::as_str),
            Some("compliant"),
            "{id}: {vst:?}"
        );
    }
    assert!(!vst.values().any(|s| s == "non_compliant"), "{vst:?}");
    let backup = applied["apply"]["results"][0]["backup_id"]
        .as_str()
        .context("backup id")?
        .to_string();
    assert!(!backup.is_empty());
    let after = snapshot(&root)?;
    assert_ne!(after, before);

    // A second apply changes nothing.
    let again = ctl.json(&["harden", "apply", "--agent", "web-01", "--yes"])?;
    assert_eq!(again["apply"]["results"][0]["backup_id"], "", "{again}");
    assert_eq!(snapshot(&root)?, after);

    // The gate facts: applied, compliant, verified after the change.
    let facts = ctl.json(&["harden", "status", "--agent", "web-01"])?;
    let f = &facts["hosts"][0];
    assert_eq!(f["baseline_applied"], true, "{facts}");
    assert_eq!(f["all_compliant"], true, "{facts}");
    assert_eq!(f["verified_after_last_change"], true, "{facts}");

    // Evidence: export, verify offline (no controller: a bogus address), tamper.
    let dir = base.path();
    let bundle = dir.join("web-01.json");
    let exported = ctl.run(&[
        "evidence",
        "export",
        "--agent",
        "web-01",
        "--format",
        "json",
        "-o",
        bundle.to_str().unwrap(),
    ])?;
    // The key the controller names over its authenticated connection: what an auditor pins.
    let key = exported
        .split("controller key sha256 ")
        .nth(1)
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    assert_eq!(key.len(), 64, "{exported}");
    let html = dir.join("web-01.html");
    ctl.run(&[
        "evidence",
        "export",
        "--agent",
        "web-01",
        "--format",
        "html",
        "-o",
        html.to_str().unwrap(),
    ])?;
    let page = fs::read_to_string(&html)?;
    for needle in [
        "web-01",
        "ssh.permit_root_login",
        "不符合",
        "compliant",
        "L3-CES1",
        "Origin unverified",
        "来源未验证",
    ] {
        assert!(page.contains(needle), "{needle} missing from the HTML page");
    }
    ctl.run(&[
        "evidence",
        "export",
        "--agent",
        "web-01",
        "--format",
        "html",
        "--controller-key-sha256",
        &key,
        "-o",
        html.to_str().unwrap(),
    ])?;
    let page = fs::read_to_string(&html)?;
    assert!(
        page.contains("Origin verified") && !page.contains("Origin unverified"),
        "pinned export page"
    );
    let offline = |path: &Path, extra: &[&str]| {
        Command::new(bin("preflight"))
            .args(["evidence", "verify"])
            .arg(path)
            .args(extra)
            .env("PREFLIGHT_CONTROLLER", "https://127.0.0.1:1")
            .env("PREFLIGHT_CONFIG", "/dev/null")
            .env_remove("PREFLIGHT_TOKEN")
            .stdin(Stdio::null())
            .output()
    };
    // Without the pin everything verifies but the origin does not: exit 4, never "OK:".
    let o = offline(&bundle, &[])?;
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("UNVERIFIED ORIGIN: "), "{out}");
    assert!(!out.contains("OK:"), "{out}");
    let o = offline(&bundle, &["--controller-key-sha256", &key])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("OK: "), "{out}");
    assert!(
        out.contains("included in the controller's log preflight/evidence-log"),
        "{out}"
    );
    let o = offline(
        &bundle,
        &["--controller-key-sha256", &key, "--output", "json"],
    )?;
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["controller_key_pinned"], true, "{v}");
    let bytes = fs::read(&bundle)?;
    let report = evidence::verify_bundle(&bytes)?;
    assert_eq!(report.controller_key_sha256, key);
    // Every tampered case below must fail as tampering (exit 1), with the key pinned.
    let refused = |path: &Path| -> Result<(Option<i32>, String)> {
        let o = offline(path, &["--controller-key-sha256", &key])?;
        Ok((
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ))
    };

    // A few single-byte flips through the CLI.
    for at in [0, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let mut t = bytes.clone();
        t[at] ^= 0x01;
        let p = dir.join(format!("flip-{at}.json"));
        fs::write(&p, &t)?;
        let (code, err) = refused(&p)?;
        assert_eq!(code, Some(1), "flip at {at} not detected");
        assert!(
            err.starts_with("error: ") && err.lines().count() == 1,
            "{err}"
        );
    }

    // Delete, reorder, truncate a record; re-sign with other keys; forge the global-log proof
    // from the bundle's own checkpoint; the high-S twin of each checkpoint signature; drop the
    // inclusion proofs.
    let b: EvidenceBundle = serde_json::from_slice(&bytes)?;
    assert!(b.records.len() >= 3);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut d = b.clone();
    d.records.remove(1);
    cases.push(("deleted record", d.to_bytes()));
    let mut d = b.clone();
    d.records.swap(0, 1);
    cases.push(("reordered records", d.to_bytes()));
    let mut d = b.clone();
    d.records.pop();
    cases.push(("dropped last record", d.to_bytes()));
    cases.push(("truncated bytes", bytes[..bytes.len() - 40].to_vec()));
    let other = other_key()?;
    let mut d = b.clone();
    let mut rec = d.records[0].record.clone();
    rec.observed = "all good".into();
    d.records[0] = evidence::sign(rec, &other)?;
    cases.push(("record re-signed with another key", d.to_bytes()));
    let mut d = b.clone();
    let mut own = evidence::EvidenceLog::new();
    for r in &d.records {
        own.append(r);
    }
    let n = own.len();
    d.log_inclusion = Some(evidence::LogInclusion {
        checkpoint: d.checkpoint.clone(),
        entries: (0..n)
            .map(|i| {
                Ok(evidence::LogEntryProof {
                    leaf_index: i,
                    proof: own
                        .inclusion_proof(i, n)?
                        .iter()
                        .map(|h| h.iter().map(|b| format!("{b:02x}")).collect())
                        .collect(),
                })
            })
            .collect::<Result<_>>()?,
    });
    cases.push((
        "global-log proof forged from the bundle's own checkpoint",
        d.to_bytes(),
    ));
    let mut d = b.clone();
    d.checkpoint.signature = evidence::ecdsa_other_encoding(&d.checkpoint.signature)
        .ok_or_else(|| anyhow::anyhow!("checkpoint signature is not DER"))?;
    cases.push(("high-S bundle checkpoint signature", d.to_bytes()));
    let mut d = b.clone();
    let inc = d.log_inclusion.as_mut().expect("exported with inclusion");
    inc.checkpoint.signature = evidence::ecdsa_other_encoding(&inc.checkpoint.signature)
        .ok_or_else(|| anyhow::anyhow!("checkpoint signature is not DER"))?;
    cases.push(("high-S global checkpoint signature", d.to_bytes()));
    let mut d = b.clone();
    d.log_inclusion = None;
    cases.push(("no global-log inclusion", d.to_bytes()));
    for (what, t) in &cases {
        let p = dir.join("tampered.json");
        fs::write(&p, t)?;
        let (code, err) = refused(&p)?;
        assert_eq!(code, Some(1), "{what} not detected: {err}");
        assert!(err.starts_with("error: "), "{what}: {err}");
        // Unpinned it is refused just the same (never the exit 4 of a genuine bundle).
        assert_eq!(offline(&p, &[])?.status.code(), Some(1), "{what} unpinned");
    }
    // Issue 20 finding 10: even with the controller's own evidence key (read from its data
    // directory), a record signed with an agent certificate the CA did not issue is refused
    // offline: the bundle chains agent certificates to the controller's CA.
    let evidence_key = fs::read(ctl.data().join("evidence.key"))?;
    let ca_der =
        preflight_pki::certs(&fs::read_to_string(ctl.data().join("ca.pem"))?, "CA")?[0].to_vec();
    let mallory_ca = preflight_pki::CertificateAuthority::generate("mallory")?;
    let (csr, mallory_pem) = preflight_pki::make_csr("web-01")?;
    let mallory_chain =
        mallory_ca.sign_agent_csr(&csr, "web-01", std::time::Duration::from_secs(86400))?;
    let mallory_cert = preflight_pki::certs(&mallory_chain, "cert")?[0].to_vec();
    let mallory_key = match (preflight_pki::Identity {
        cert_pem: mallory_chain,
        key_pem: mallory_pem,
    })
    .key()?
    {
        rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        _ => bail!("expected a PKCS#8 key"),
    };
    let mut rec = b.records[0].record.clone();
    rec.observed = "all good".into();
    rec.agent_cert_sha256 = evidence::sha256_hex(&mallory_cert);
    let forged = vec![evidence::sign(rec, &mallory_key)?];
    let keys: BTreeMap<String, evidence::AgentKey> = [evidence::AgentKey::new(
        "web-01",
        &mallory_cert,
        &evidence::p256_spki_from_pkcs8(&mallory_key)?,
    )]
    .into_iter()
    .collect();
    let mut glog = evidence::EvidenceLog::new();
    let idx: Vec<u64> = forged.iter().map(|r| glog.append(r).0).collect();
    let gcp = glog.checkpoint(evidence::GLOBAL_LOG_ORIGIN, 1, |c| {
        evidence::sign_checkpoint(c, &evidence_key)
    })?;
    let d = EvidenceBundle::build(
        forged,
        keys,
        &b.checkpoint.checkpoint.origin,
        1,
        Some(&ca_der),
        &evidence_key,
    )?
    .with_log_inclusion(&glog, &idx, gcp)?;
    let p = dir.join("mallory.json");
    fs::write(&p, d.to_bytes())?;
    let (code, err) = refused(&p)?;
    assert_eq!(code, Some(1), "a self-made agent certificate passed: {err}");
    assert!(err.contains("is not valid for the CA"), "{err}");

    // The whole bundle re-signed by another controller key is self-consistent; the pinned key
    // catches it.
    let resigned = EvidenceBundle::build(
        b.records.clone(),
        b.agent_keys.clone(),
        &b.checkpoint.checkpoint.origin,
        b.checkpoint.checkpoint.time_utc_ms,
        None,
        &other,
    )?
    .to_bytes();
    let p = dir.join("resigned.json");
    fs::write(&p, &resigned)?;
    let o = offline(&p, &["--controller-key-sha256", &key])?;
    assert!(
        !o.status.success(),
        "re-signed bundle passed with the pinned key"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("not the trusted"));

    // Rollback restores every byte.
    let rb = ctl.json(&[
        "harden", "rollback", "--agent", "web-01", "--backup", &backup,
    ])?;
    assert_eq!(rb["results"][0]["error"], "", "{rb}");
    assert_eq!(
        snapshot(&root)?,
        before,
        "rollback did not restore the tree"
    );
    let audit2 = ctl.audit_json(&["harden", "audit", "--agent", "web-01"])?;
    let st2 = statuses(&audit2);
    for id in SEEDED {
        assert_eq!(
            st2.get(*id).map(String::as_str),
            Some("non_compliant"),
            "{id}"
        );
    }
    let facts = ctl.json(&["harden", "status", "--agent", "web-01"])?;
    let f = &facts["hosts"][0];
    assert_eq!(f["baseline_applied"], false, "{facts}");
    assert_eq!(f["all_compliant"], false, "{facts}");
    let nc = f["noncompliant"].to_string();
    assert!(nc.contains("ssh.permit_root_login"), "{facts}");

    // A remote caller cannot name files: unknown checks and path-like backup ids are refused.
    let o = ctl
        .cli()
        .args([
            "harden",
            "rollback",
            "--agent",
            "web-01",
            "--backup",
            "../../etc",
        ])
        .output()?;
    assert!(!o.status.success());
    let o = ctl
        .cli()
        .args(["harden", "audit", "--agent", "web-01", "--check", "no.such"])
        .output()?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no.such"));
    // Thresholds come from a policy file; a bad one is refused naming the field.
    let pol = dir.join("policy.toml");
    fs::write(&pol, "pass_max_days = 0\n")?;
    let o = ctl
        .cli()
        .args([
            "harden",
            "audit",
            "--agent",
            "web-01",
            "--policy",
            pol.to_str().unwrap(),
        ])
        .output()?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("pass_max_days"));
    fs::write(&pol, "ssh_max_auth_tries = 6\n")?;
    let v = ctl.audit_json(&[
        "harden",
        "audit",
        "--agent",
        "web-01",
        "--check",
        "ssh.max_auth_tries",
        "--policy",
        pol.to_str().unwrap(),
    ])?;
    assert!(
        v["results"][0]["checks"][0]["expected"]
            .as_str()
            .unwrap_or("")
            .contains('6'),
        "{v}"
    );
    // --batch names an existing batch (with a plan: see the workflow gate test).
    let o = ctl
        .cli()
        .args(["harden", "audit", "--batch", "B-1"])
        .output()?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no batch \"B-1\""));
    Ok(())
}

fn other_key() -> Result<Vec<u8>> {
    let (_, key_pem) = preflight_pki::make_csr("other")?;
    let id = preflight_pki::Identity {
        cert_pem: String::new(),
        key_pem,
    };
    match id.key()? {
        rustls::pki_types::PrivateKeyDer::Pkcs8(k) => Ok(k.secret_pkcs8_der().to_vec()),
        _ => bail!("expected a PKCS#8 key"),
    }
}

/// Every single-byte change of a small exported bundle (one record) is detected.
#[test]
fn every_byte_of_a_small_exported_bundle_matters() -> Result<()> {
    if not_root() {
        eprintln!("SKIP: the fixture's files must be owned by root for the checks to run");
        return Ok(());
    }
    let OneHost {
        ctl, base, _agent, ..
    } = one_host("small-01")?;
    ctl.audit_json(&[
        "harden",
        "audit",
        "--agent",
        "small-01",
        "--check",
        "ssh.max_auth_tries",
    ])?;
    let p = base.path().join("small.json");
    ctl.run(&[
        "evidence",
        "export",
        "--agent",
        "small-01",
        "-o",
        p.to_str().unwrap(),
    ])?;
    let bytes = fs::read(&p)?;
    evidence::verify_bundle(&bytes)?;
    let b: EvidenceBundle = serde_json::from_slice(&bytes)?;
    assert_eq!(b.records.len(), 1);
    let mut undetected = Vec::new();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x20] {
            let mut t = bytes.clone();
            t[i] ^= bit;
            if evidence::verify_bundle(&t).is_ok() {
                undetected.push((i, bit));
            }
        }
    }
    assert!(undetected.is_empty(), "undetected flips: {undetected:?}");
    Ok(())
}

/// An agent's evidence outgrows one ordinary 4 MiB message after some 40 full audits; the
/// export still carries it whole, and it verifies.
#[test]
fn evidence_export_outgrows_one_ordinary_message() -> Result<()> {
    if not_root() {
        eprintln!("SKIP: the fixture's files must be owned by root for the checks to run");
        return Ok(());
    }
    let OneHost {
        ctl, base, _agent, ..
    } = one_host("big-01")?;
    let p = base.path().join("big.json");
    let mut audits = 0;
    let bytes = loop {
        for _ in 0..10 {
            ctl.audit_json(&["harden", "audit", "--agent", "big-01"])?;
        }
        audits += 10;
        ctl.run(&[
            "evidence",
            "export",
            "--agent",
            "big-01",
            "-o",
            p.to_str().unwrap(),
        ])?;
        let bytes = fs::read(&p)?;
        if bytes.len() > 4 * 1024 * 1024 + 256 * 1024 {
            break bytes;
        }
        assert!(
            audits < 150,
            "{audits} audits made only {} bytes",
            bytes.len()
        );
    };
    let report = evidence::verify_bundle(&bytes)?;
    let b: EvidenceBundle = serde_json::from_slice(&bytes)?;
    assert!(b.records.len() > 1000, "{} records", b.records.len());
    eprintln!(
        "exported {} records, {} bytes after {audits} audits: {report:?}",
        b.records.len(),
        bytes.len()
    );
    Ok(())
}

/// The workflow gates through the CLI, with two agents on Debian 12 fixture roots: `deploy`
/// needs baseline evidence on every planned server (evidence gathered before the plan was
/// attached counts); `--batch` maps the plan's servers to agents and names a server with no
/// agent; leaving `harden` is refused for a batch with one non-compliant host, naming the host
/// and the check, and allowed once that host is fixed and re-verified.
#[test]
fn workflow_gates_need_baseline_then_every_host_compliant() -> Result<()> {
    if not_root() {
        eprintln!("SKIP: the fixture's files must be owned by root for the checks to pass");
        return Ok(());
    }
    let ctl = Controller::start(&["--dev-clock", "--heartbeat-interval", "1s"])?;
    let base = tempfile::tempdir()?;
    let web_root = debian_root(&base.path().join("web"))?;
    let db_root = debian_root(&base.path().join("db"))?;
    let mut web = Agent::enroll(&ctl, base.path(), "web-01", "127.0.0.1")?;
    start_with_root(&mut web, &web_root)?;
    let mut db = Agent::enroll(&ctl, base.path(), "db-01", "127.0.0.1")?;
    start_with_root(&mut db, &db_root)?;
    ctl.wait_online("web-01");
    ctl.wait_online("db-01");

    let mut tokens = BTreeMap::new();
    for (name, role) in [
        ("pat", "project"),
        ("ian", "integrator"),
        ("dan", "dispatcher"),
        ("amy", "deployer"),
    ] {
        let v = ctl.json(&["user", "add", name, "--role", role])?;
        tokens.insert(name, v["token"].as_str().context("token")?.to_string());
    }
    let out = |who: &str, args: &[&str]| -> Result<std::process::Output> {
        Ok(ctl.cli_as(&tokens[who]).args(args).output()?)
    };
    let run = |who: &str, args: &[&str]| -> Result<String> {
        let o = out(who, args)?;
        if !o.status.success() {
            bail!(
                "{who}: preflight {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let refused = |who: &str, args: &[&str]| -> Result<String> {
        let o = out(who, args)?;
        assert!(
            !o.status.success(),
            "{who}: preflight {} succeeded, expected a refusal",
            args.join(" ")
        );
        Ok(String::from_utf8_lossy(&o.stderr).trim().to_string())
    };
    let stage = |b: &str| -> Result<String> {
        let v = ctl.json(&["batch", "show", b])?;
        Ok(v["batch"]["stage"].as_str().context("stage")?.to_string())
    };
    ctl.run(&[
        "project", "add", "P1", "--name", "Portal", "--line", "gov", "--budget", "B-2026-1",
    ])?;
    ctl.run(&["deployer", "add", "amy"])?;
    let plan = |name: &str, hosts: &[&str]| -> Result<String> {
        let mut t = String::new();
        for (i, h) in hosts.iter().enumerate() {
            t.push_str(&format!(
                "[[servers]]\naddress = \"10.20.0.{}\"\nhostname = \"{h}\"\nrole = \"app\"\napps = [{{ name = \"app\", ports = \"8080\" }}]\n\n",
                i + 1
            ));
        }
        t.push_str("[management]\nsources = [\"10.8.0.0/16\"]\n");
        // Complete, so the batch passes the `plan` gate: paths and a VIP for the cluster.
        t.push_str("\n[[paths]]\nfrom = { role = \"app\" }\nto = { role = \"app\" }\nports = \"8080\"\n\n[[vips]]\naddress = \"10.20.0.100\"\nrole = \"app\"\nports = \"8080\"\n");
        t.push_str(preflight_tests::PLAN_COMPLETION);
        let p = base.path().join(name);
        fs::write(&p, t)?;
        Ok(p.to_str().context("utf-8 path")?.to_string())
    };
    let to_plan = |b: &str| -> Result<()> {
        run(
            "pat",
            &["batch", "create", b, "--project", "P1", "--title", b],
        )?;
        run("pat", &["batch", "advance", b])?;
        run("ian", &["batch", "advance", b])?;
        run("pat", &["batch", "advance", b])?;
        assert_eq!(stage(b)?, "plan");
        Ok(())
    };

    // A server of the plan with no agent: --batch names it and says to enroll it.
    to_plan("B2")?;
    let err = refused("ian", &["harden", "audit", "--batch", "B2"])?;
    assert!(err.contains("no plan attached"), "{err}");
    run(
        "ian",
        &[
            "plan",
            "attach",
            "B2",
            &plan("p2.toml", &["web-01", "cache-01"])?,
        ],
    )?;
    let err = refused("ian", &["harden", "audit", "--batch", "B2"])?;
    assert!(
        err.contains("cache-01") && err.contains("enroll") && !err.contains("web-01"),
        "{err}"
    );

    // Evidence from before the plan is attached counts: web-01 is hardened first.
    run("amy", &["harden", "apply", "--agent", "web-01", "--yes"])?;
    to_plan("B1")?;
    run(
        "ian",
        &[
            "plan",
            "attach",
            "B1",
            &plan("p1.toml", &["web-01", "db-01"])?,
        ],
    )?;
    run("ian", &["batch", "advance", "B1"])?;
    run("pat", &["batch", "confirm-plan", "B1"])?;
    ctl.run(&["dev", "record", "readiness", "B1"])?;
    run("pat", &["batch", "advance", "B1"])?;
    run("dan", &["assign", "B1", "--deployer", "amy"])?;
    run("amy", &["batch", "advance", "B1"])?;
    assert_eq!(stage("B1")?, "deploy");

    // deploy needs baseline evidence on every server: db-01 has none yet.
    let err = refused("amy", &["batch", "advance", "B1"])?;
    assert!(err.contains("db-01: no hardening evidence"), "{err}");
    assert!(
        !err.contains("web-01"),
        "web-01's earlier evidence must count: {err}"
    );

    // --batch resolves both servers; apply (and its verify) records the facts.
    let v = ctl.json(&["harden", "apply", "--batch", "B1", "--yes"])?;
    let mut ran: Vec<&str> = v["apply"]["results"]
        .as_array()
        .context("results")?
        .iter()
        .filter_map(|r| r["agent_id"].as_str())
        .collect();
    ran.sort_unstable();
    assert_eq!(ran, ["db-01", "web-01"], "{v}");
    let st = ctl.json(&["harden", "status", "--batch", "B1"])?;
    assert_eq!(st["hosts"].as_array().map(Vec::len), Some(2), "{st}");
    run("amy", &["batch", "advance", "B1"])?;
    run("ian", &["batch", "advance", "B1"])?;
    assert_eq!(stage("B1")?, "harden");

    // db-01 drifts: /etc/passwd made world-writable; the next audit records it.
    fs::set_permissions(
        db_root.join("etc/passwd"),
        fs::Permissions::from_mode(0o666),
    )?;
    let v = ctl.audit_json(&["harden", "audit", "--batch", "B1"])?;
    let db_checks = v["results"]
        .as_array()
        .context("results")?
        .iter()
        .find(|r| r["agent_id"] == "db-01")
        .context("db-01 result")?;
    let st = statuses(&serde_json::json!({ "results": [db_checks] }));
    assert_eq!(
        st.get("perm.critical_files").map(String::as_str),
        Some("non_compliant"),
        "{st:?}"
    );
    let err = refused("ian", &["batch", "advance", "B1"])?;
    assert!(
        err.contains("db-01: not compliant: perm.critical_files"),
        "the refusal must name the host and the check: {err}"
    );
    assert!(!err.contains("web-01"), "{err}");
    assert_eq!(stage("B1")?, "harden");

    // Fixed (apply, then its verify) on that host alone: the batch may leave harden.
    run("amy", &["harden", "apply", "--agent", "db-01", "--yes"])?;
    let mode = fs::metadata(db_root.join("etc/passwd"))?
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o644);
    run("ian", &["batch", "advance", "B1"])?;
    assert_eq!(stage("B1")?, "env_check");

    // The auditor's bundle for the batch holds both servers' records.
    let p = base.path().join("B1.json");
    ctl.run(&[
        "evidence",
        "export",
        "--batch",
        "B1",
        "-o",
        p.to_str().context("utf-8 path")?,
    ])?;
    let report = evidence::verify_bundle(&fs::read(&p)?)?;
    let agents: Vec<&String> = report.records_per_agent.keys().collect();
    assert_eq!(
        agents,
        ["db-01", "web-01"],
        "{:?}",
        report.records_per_agent
    );
    Ok(())
}

/// `harden status` on fixture agents: the firewall of a host audited on a fixture root was never
/// judged (`n/a`, not `true`), and an agent never audited shows `never audited`, not `false` in
/// every column.
#[test]
fn harden_status_shows_na_firewall_on_fixtures_and_never_audited_hosts() -> Result<()> {
    let h = one_host("fx-01")?;
    let mut other = Agent::enroll(&h.ctl, h.base.path(), "fx-02", "127.0.0.1")?;
    let root2 = h.base.path().join("root2");
    tree::copy_fixture(&fixture_src("debian12"), &root2)?;
    start_with_root(&mut other, &root2)?;
    h.ctl.wait_online("fx-02");
    h.ctl.audit_json(&["harden", "audit", "--agent", "fx-01"])?;

    let v = h
        .ctl
        .json(&["harden", "status", "--agent", "fx-01", "--agent", "fx-02"])?;
    let host = |id: &str| {
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["agent_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing: {v}"))
    };
    let (a, b) = (host("fx-01"), host("fx-02"));
    assert_eq!(
        (&a["firewall"], &a["audited"]),
        (&"not_applicable".into(), &true.into()),
        "{a}"
    );
    assert_eq!(
        (&b["firewall"], &b["audited"]),
        (&"never_audited".into(), &false.into()),
        "{b}"
    );

    let text = h
        .ctl
        .run(&["harden", "status", "--agent", "fx-01", "--agent", "fx-02"])?;
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} missing: {text}"))
            .to_string()
    };
    let cols: Vec<String> = line("fx-01").split_whitespace().map(String::from).collect();
    // AGENT BASELINE ALL-COMPLIANT VERIFIED FIREWALL ...
    assert_eq!(cols.get(4).map(String::as_str), Some("n/a"), "{text}");
    let never = line("fx-02");
    assert!(
        never.contains("never audited") && !never.contains("false"),
        "{text}"
    );
    Ok(())
}
