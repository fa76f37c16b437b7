//! The example plans under deploy/examples parse, and the helpers the sweep uses give the
//! expected servers, paths, ports and digest.

use std::path::PathBuf;

use preflight_core::net::Proto;
use preflight_core::plan::{Endpoint, OnExists, PackageKind, Plan, Thresholds};

fn example(name: &str) -> (String, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/examples")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("example file is readable");
    (name.to_string(), text)
}

fn toml_plan() -> Plan {
    let (name, text) = example("plan.toml");
    match Plan::from_toml(&name, &text) {
        Ok(p) => p,
        Err(e) => panic!("example plan.toml is invalid:\n{e}"),
    }
}

#[test]
fn example_toml_plan_parses_with_every_section() {
    let plan = toml_plan();
    assert_eq!(plan.batch.project.as_deref(), Some("citizen-portal"));
    assert_eq!(plan.servers.len(), 6);
    let roles: Vec<&str> = plan.roles().into_iter().collect();
    assert_eq!(roles, ["db", "nginx", "soa"]);
    assert_eq!(plan.paths.len(), 3);
    assert_eq!(plan.vips.len(), 2);
    assert_eq!(plan.vips[0].members, ["web-01", "web-02"]);
    assert_eq!(plan.bandwidth.len(), 3);
    assert_eq!(plan.management.sources.len(), 2);
    assert_eq!(plan.management.sources[1].to_string(), "10.20.0.5/32");
    assert_eq!(plan.thresholds, Thresholds::default());
    let db = plan.server("db-01").expect("db-01 is planned");
    assert_eq!(db.data_dirs, ["/data/pgsql", "/data/pgwal"]);
    assert_eq!(
        plan.server("10.20.0.31").map(|s| &s.hostname),
        Some(&db.hostname)
    );
    let backups: Vec<_> = plan.packages_for(db).collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        backups[0].kind,
        PackageKind::DbBackup {
            database: "portal".into(),
            on_exists: OnExists::Rename
        }
    );
    let soa = plan.server("SOA-01").expect("lookup is case-insensitive");
    assert_eq!(plan.packages_for(soa).count(), 1);
}

#[test]
fn role_thresholds_override_only_the_keys_given() {
    let plan = toml_plan();
    let db = plan.server("db-01").expect("db-01 is planned");
    let t = plan.thresholds_for(db);
    assert_eq!(t.min_randread_iops, 20_000);
    assert_eq!(t.min_cores, 16);
    // Not overridden for db: the global value.
    assert_eq!(t.min_bandwidth_mbit, plan.thresholds.min_bandwidth_mbit);
    let web = plan.server("web-01").expect("web-01 is planned");
    assert_eq!(plan.thresholds_for(web).min_free_disk_gib, 20);
    assert_eq!(
        plan.thresholds_for(web).min_cores,
        plan.thresholds.min_cores
    );
    let soa = plan.server("soa-01").expect("soa-01 is planned");
    assert_eq!(plan.thresholds_for(soa), &plan.thresholds);
}

#[test]
fn expanded_paths_cover_every_pair_without_self_loops() {
    let plan = toml_plan();
    let paths = plan.expanded_paths();
    // nginx(2) -> soa(3) :8080 = 6; soa <-> soa 5701-5703 = 3*2*3 = 18; soa(3) -> db :5432 = 3.
    assert_eq!(paths.len(), 27);
    assert!(paths.iter().all(|p| p.from.hostname != p.to.hostname));
    assert!(paths.iter().all(|p| p.protocol == Proto::Tcp));
    let web_to_soa: Vec<_> = paths
        .iter()
        .filter(|p| p.from.role == "nginx" && p.port == 8080)
        .map(|p| (p.from.hostname.as_str(), p.to.hostname.as_str()))
        .collect();
    assert_eq!(
        web_to_soa,
        [
            ("web-01", "soa-01"),
            ("web-01", "soa-02"),
            ("web-01", "soa-03"),
            ("web-02", "soa-01"),
            ("web-02", "soa-02"),
            ("web-02", "soa-03"),
        ]
    );
    assert_eq!(paths.iter().filter(|p| p.to.hostname == "db-01").count(), 3);
}

#[test]
fn planned_ports_expand_ranges() {
    let plan = toml_plan();
    let soa = plan.server("soa-02").expect("soa-02 is planned");
    let ports: Vec<u16> = soa.planned_ports().iter().map(|p| p.port).collect();
    let mut want = vec![8080, 9100];
    want.extend(8081..=8089);
    want.extend(5701..=5703);
    want.sort_unstable();
    assert_eq!(ports, want);
    let total: usize = plan.planned_ports().iter().map(|(_, p)| p.len()).sum();
    assert_eq!(total, 2 * 3 + 3 * 14 + 2);
}

#[test]
fn csv_server_list_gives_the_same_servers_as_toml() {
    let toml = toml_plan();
    let (name, text) = example("servers.csv");
    let csv = Plan::from_csv(&name, &text).unwrap_or_else(|e| panic!("servers.csv:\n{e}"));
    assert_eq!(csv.servers, toml.servers);
    assert!(csv.paths.is_empty());
    assert_eq!(csv.thresholds, Thresholds::default());
}

#[test]
fn toml_without_servers_plus_csv_equals_the_full_toml_plan() {
    let (tn, tt) = example("plan-paths.toml");
    let (cn, ct) = example("servers.csv");
    let merged = Plan::from_toml_with_csv_servers(&tn, &tt, &cn, &ct)
        .unwrap_or_else(|e| panic!("merge failed:\n{e}"));
    let full = toml_plan();
    assert_eq!(merged, full);
    assert_eq!(merged.digest(), full.digest());
    // Without the CSV the same TOML has no servers, and says so.
    let err = Plan::from_toml(&tn, &tt).expect_err("no servers");
    assert!(
        err.to_string()
            .contains("field servers: the plan has no servers"),
        "{err}"
    );
}

#[test]
fn digest_is_stable_and_tracks_every_change() {
    let plan = toml_plan();
    let d = plan.digest();
    assert_eq!(d.len(), 64);
    assert!(d
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(toml_plan().digest(), d);
    let mut changed = plan.clone();
    changed.thresholds.min_cores += 1;
    assert_ne!(changed.digest(), d);
    let mut changed = plan.clone();
    changed.paths[0].to = Endpoint::Server("soa-01".into());
    assert_ne!(changed.digest(), d);
}

#[test]
fn plan_round_trips_through_json_storage() {
    let plan = toml_plan();
    let json = serde_json::to_string(&plan).expect("serializes");
    let back: Plan = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, plan);
    assert_eq!(back.digest(), plan.digest());
}

#[test]
fn thresholds_default_when_absent_and_override_when_given() {
    let text = "[[servers]]\naddress = \"127.0.0.2\"\nhostname = \"a\"\nrole = \"r\"\n\n[thresholds]\nmin_cores = 16\n";
    let plan = Plan::from_toml("t.toml", text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.thresholds.min_cores, 16);
    assert_eq!(
        plan.thresholds.min_bandwidth_mbit,
        Thresholds::default().min_bandwidth_mbit
    );
    assert_eq!(plan.thresholds.min_bandwidth_mbit, 1000);
}
