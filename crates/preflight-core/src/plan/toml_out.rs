//! The canonical TOML of a validated plan: [`Plan::to_toml`] writes every resolved value (CSV
//! servers merged, defaults filled in, role thresholds complete, virtual IP members listed), so
//! that [`Plan::from_toml`] of the text gives back an equal plan with the same digest. The
//! controller keeps this text for the batch a plan is attached to, and validates it again.

use toml::{Table, Value};

use super::{Endpoint, PackageKind, Plan, PortRange, Thresholds};

fn s(v: impl ToString) -> Value {
    Value::String(v.to_string())
}

fn n(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

fn ports(r: &[PortRange]) -> Value {
    s(r.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

fn endpoint(e: &Endpoint) -> Value {
    let mut t = Table::new();
    match e {
        Endpoint::Role(r) => t.insert("role".into(), s(r)),
        Endpoint::Server(h) => t.insert("server".into(), s(h)),
    };
    Value::Table(t)
}

fn thresholds(t: &Thresholds) -> Table {
    let mut o = Table::new();
    for (k, v) in [
        ("min_randread_iops", t.min_randread_iops),
        ("min_randwrite_iops", t.min_randwrite_iops),
        ("max_fdatasync_p99_us", t.max_fdatasync_p99_us),
        ("min_bandwidth_mbit", t.min_bandwidth_mbit),
        ("min_cores", t.min_cores),
        ("min_memory_mib", t.min_memory_mib),
        ("min_free_disk_gib", t.min_free_disk_gib),
        ("max_clock_skew_ms", t.max_clock_skew_ms),
        ("report_max_age_minutes", t.report_max_age_minutes),
    ] {
        o.insert(k.into(), n(v));
    }
    o
}

fn array(items: Vec<Table>) -> Value {
    Value::Array(items.into_iter().map(Value::Table).collect())
}

impl Plan {
    /// The plan as canonical TOML (see the module documentation of `toml_out`).
    pub fn to_toml(&self) -> String {
        let mut root = Table::new();
        let mut batch = Table::new();
        for (k, v) in [
            ("project", &self.batch.project),
            ("batch", &self.batch.batch),
            ("integrator", &self.batch.integrator),
            ("notes", &self.batch.notes),
        ] {
            if let Some(v) = v {
                batch.insert(k.into(), s(v));
            }
        }
        root.insert("batch".into(), Value::Table(batch));
        let mut th = thresholds(&self.thresholds);
        if !self.role_thresholds.is_empty() {
            let roles: Table = self
                .role_thresholds
                .iter()
                .map(|(r, t)| (r.clone(), Value::Table(thresholds(t))))
                .collect();
            th.insert("roles".into(), Value::Table(roles));
        }
        root.insert("thresholds".into(), Value::Table(th));
        let mut m = Table::new();
        m.insert(
            "sources".into(),
            Value::Array(self.management.sources.iter().map(s).collect()),
        );
        m.insert("ssh_port".into(), n(self.management.ssh_port.into()));
        m.insert("agent_port".into(), n(self.management.agent_port.into()));
        root.insert("management".into(), Value::Table(m));
        if let Some(j) = &self.jump_host {
            let mut t = Table::new();
            t.insert("address".into(), s(j.address));
            let kind = serde_json::to_value(j.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            t.insert("kind".into(), s(kind));
            root.insert("jump_host".into(), Value::Table(t));
        }
        let servers = self
            .servers
            .iter()
            .map(|sv| {
                let mut t = Table::new();
                t.insert("address".into(), s(sv.address));
                t.insert("hostname".into(), s(&sv.hostname));
                t.insert("role".into(), s(&sv.role));
                let apps = sv
                    .apps
                    .iter()
                    .map(|a| {
                        let mut t = Table::new();
                        t.insert("name".into(), s(&a.name));
                        t.insert("protocol".into(), s(a.protocol));
                        if !a.ports.is_empty() {
                            t.insert("ports".into(), ports(&a.ports));
                        }
                        Value::Table(t)
                    })
                    .collect();
                t.insert("apps".into(), Value::Array(apps));
                t.insert(
                    "data_dirs".into(),
                    Value::Array(sv.data_dirs.iter().map(s).collect()),
                );
                t
            })
            .collect();
        root.insert("servers".into(), array(servers));
        let paths = self
            .paths
            .iter()
            .map(|p| {
                let mut t = Table::new();
                t.insert("from".into(), endpoint(&p.from));
                t.insert("to".into(), endpoint(&p.to));
                t.insert("ports".into(), ports(&p.ports));
                t.insert("protocol".into(), s(p.protocol));
                t
            })
            .collect();
        root.insert("paths".into(), array(paths));
        let vips = self
            .vips
            .iter()
            .map(|v| {
                let mut t = Table::new();
                if let Some(name) = &v.name {
                    t.insert("name".into(), s(name));
                }
                t.insert("address".into(), s(v.address));
                t.insert(
                    "servers".into(),
                    Value::Array(v.members.iter().map(s).collect()),
                );
                if !v.ports.is_empty() {
                    t.insert("ports".into(), ports(&v.ports));
                }
                t.insert("protocol".into(), s(v.protocol));
                t
            })
            .collect();
        root.insert("vips".into(), array(vips));
        let bw = self
            .bandwidth
            .iter()
            .map(|b| {
                let mut t = Table::new();
                t.insert("from".into(), s(&b.from));
                t.insert("to".into(), s(&b.to));
                t.insert("port".into(), n(b.port.into()));
                t
            })
            .collect();
        root.insert("bandwidth".into(), array(bw));
        let packages = self
            .packages
            .iter()
            .map(|p| {
                let mut t = Table::new();
                t.insert("path".into(), s(&p.path));
                t.insert("size".into(), n(p.size));
                t.insert("sha256".into(), s(&p.sha256));
                match &p.kind {
                    PackageKind::App => {
                        t.insert("kind".into(), s("app"));
                    }
                    PackageKind::DbBackup {
                        database,
                        on_exists,
                    } => {
                        t.insert("kind".into(), s("db_backup"));
                        t.insert("database".into(), s(database));
                        let e = serde_json::to_value(on_exists)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default();
                        t.insert("on_exists".into(), s(e));
                    }
                }
                if let Some(on) = &p.on {
                    t.insert("on".into(), endpoint(on));
                }
                t
            })
            .collect();
        root.insert("packages".into(), array(packages));
        toml::to_string(&root).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Plan;

    #[test]
    fn the_example_plans_round_trip_with_the_same_digest() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/examples/");
        let toml_text = std::fs::read_to_string(format!("{root}plan.toml")).expect("plan.toml");
        let csv_text = std::fs::read_to_string(format!("{root}servers.csv")).expect("servers.csv");
        let mut plans = vec![Plan::from_toml("plan.toml", &toml_text).expect("valid example")];
        plans.push(Plan::from_csv("servers.csv", &csv_text).expect("valid csv"));
        let paths = std::fs::read_to_string(format!("{root}plan-paths.toml")).expect("paths");
        plans.push(
            Plan::from_toml_with_csv_servers("plan-paths.toml", &paths, "servers.csv", &csv_text)
                .expect("valid merge"),
        );
        for p in plans {
            let text = p.to_toml();
            let back =
                Plan::from_toml("canonical.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back, p, "{text}");
            assert_eq!(back.digest(), p.digest());
            assert_eq!(back.to_toml(), text, "canonical: a fixed point");
        }
    }
}
