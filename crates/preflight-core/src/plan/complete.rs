//! Plan completeness (WORKFLOW.md stage `plan`): what a plan still lacks before the batch may
//! leave the `plan` stage. The controller judges it from the stored plan, never from a client.

use super::{PackageKind, Plan};

/// Role or app names that mean a database server: such a server needs a database backup in the
/// package manifest (the most frequent cause of a pause is a backup that was never downloaded).
pub const DATABASE_NAMES: &[&str] = &[
    "db",
    "database",
    "postgres",
    "postgresql",
    "pgsql",
    "mysql",
    "mariadb",
    "oracle",
    "sqlserver",
    "mssql",
    "dm",
    "dameng",
    "kingbase",
    "gaussdb",
    "opengauss",
    "oceanbase",
    "tidb",
    "mongodb",
];

/// Whether a role or app name stands for a database (`db`, `pg-main`, `mysql_8`, …).
fn is_database_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|part| DATABASE_NAMES.contains(&part))
}

/// The text of a facts-only attachment (digest and hosts without the plan): it can never be
/// complete, since the controller cannot see the plan.
pub fn facts_only_incomplete(batch: &str) -> String {
    format!(
        "the plan itself: the controller holds only its digest and hosts, so it cannot check the plan; attach the plan file with `preflight plan attach {batch} PLAN_FILE`"
    )
}

/// [`facts_only_incomplete`] in Chinese (`--lang zh`).
pub fn facts_only_incomplete_zh(batch: &str) -> String {
    format!(
        "规划文件本身：控制端只保存了它的摘要和主机列表，无法检查规划内容；请用 `preflight plan attach {batch} PLAN_FILE` 附上规划文件"
    )
}

impl Plan {
    /// What the plan lacks, one entry per missing part, each naming what to add; empty when
    /// the plan is complete. The parts (WORKFLOW.md stage `plan`):
    ///
    /// - servers: at least one; each with an app listening on a port (IP, hostname and role are
    ///   required by validation already);
    /// - required paths: at least one `[[paths]]` when the plan has two or more servers;
    /// - thresholds: always present (every key has a default), never missing;
    /// - virtual IPs: every role with two or more servers is a cluster and needs a `[[vips]]`
    ///   with at least one of its servers as a member;
    /// - jump host: `[jump_host]`;
    /// - package manifest: at least one `[[packages]]`, and a `db_backup` on every database
    ///   server (role or app named as in [`DATABASE_NAMES`]).
    pub fn incomplete(&self) -> Vec<String> {
        self.incomplete_both()
            .into_iter()
            .map(|(en, _)| en)
            .collect()
    }

    /// [`Self::incomplete`] in Chinese, entry by entry (`--lang zh`).
    pub fn incomplete_zh(&self) -> Vec<String> {
        self.incomplete_both()
            .into_iter()
            .map(|(_, zh)| zh)
            .collect()
    }

    fn incomplete_both(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        if self.servers.is_empty() {
            out.push((
                "servers: the plan lists no servers: add [[servers]] tables".to_string(),
                "服务器：规划中没有服务器：请添加 `[[servers]]` 表".to_string(),
            ));
        }
        for s in &self.servers {
            if !s.apps.iter().any(|a| !a.ports.is_empty()) {
                out.push((
                    format!(
                        "servers: {} has no app with ports: add apps = [{{ name = \"APP\", ports = \"PORT\" }}]",
                        s.hostname
                    ),
                    format!(
                        "服务器：`{}` 没有带端口的应用：请添加 `apps = [{{ name = \"APP\", ports = \"PORT\" }}]`",
                        s.hostname
                    ),
                ));
            }
        }
        if self.servers.len() >= 2 && self.paths.is_empty() {
            out.push((
                "required paths: none declared: add [[paths]] with from, to and ports for every connection between servers"
                    .to_string(),
                "必需路径：未声明：请为服务器之间的每条连接添加 `[[paths]]`，填写 `from`、`to` 和 `ports`"
                    .to_string(),
            ));
        }
        for role in self.roles() {
            let members: Vec<&str> = self
                .servers
                .iter()
                .filter(|s| s.role == role)
                .map(|s| s.hostname.as_str())
                .collect();
            if members.len() < 2 {
                continue;
            }
            let covered = self.vips.iter().any(|v| {
                v.members
                    .iter()
                    .any(|m| members.iter().any(|h| h.eq_ignore_ascii_case(m)))
            });
            if !covered {
                out.push((
                    format!(
                        "virtual IPs: role {role} is a cluster of {} servers without a virtual IP: add [[vips]] with role = \"{role}\"",
                        members.len()
                    ),
                    format!(
                        "虚拟IP：角色 `{role}` 是由 {} 台服务器组成的集群，但没有虚拟IP：请添加 `[[vips]]`，并设 `role = \"{role}\"`",
                        members.len()
                    ),
                ));
            }
        }
        if self.jump_host.is_none() {
            out.push((
                "jump host: none declared: add [jump_host] with address and kind (\"windows\" or \"linux_desktop\")"
                    .to_string(),
                "跳板机：未声明：请添加 `[jump_host]`，填写 `address` 和 `kind`（`\"windows\"` 或 `\"linux_desktop\"`）"
                    .to_string(),
            ));
        }
        if self.packages.is_empty() {
            out.push((
                "package manifest: no package files: add [[packages]] with path, size, sha256 and kind for every file of the deployment package"
                    .to_string(),
                "安装包清单：没有安装包文件：请为部署包的每个文件添加 `[[packages]]`，填写 `path`、`size`、`sha256` 和 `kind`"
                    .to_string(),
            ));
        }
        for s in &self.servers {
            let db = is_database_name(&s.role) || s.apps.iter().any(|a| is_database_name(&a.name));
            if !db {
                continue;
            }
            let has_backup = self
                .packages_for(s)
                .any(|p| matches!(p.kind, PackageKind::DbBackup { .. }));
            if !has_backup {
                out.push((
                    format!(
                        "package manifest: database server {} has no database backup: add [[packages]] with kind = \"db_backup\", database, on_exists and on = {{ server = \"{}\" }}",
                        s.hostname, s.hostname
                    ),
                    format!(
                        "安装包清单：数据库服务器 `{}` 没有数据库备份：请添加 `[[packages]]`，设 `kind = \"db_backup\"`，并填写 `database`、`on_exists` 和 `on = {{ server = \"{}\" }}`",
                        s.hostname, s.hostname
                    ),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVERS_ONLY: &str = r#"
[[servers]]
address = "10.20.0.11"
hostname = "web-01"
role = "nginx"

[[servers]]
address = "10.20.0.12"
hostname = "web-02"
role = "nginx"
apps = [{ name = "nginx", ports = "80" }]

[[servers]]
address = "10.20.0.31"
hostname = "db-01"
role = "db"
apps = [{ name = "postgresql", ports = "5432" }]
"#;

    #[test]
    fn a_plan_with_servers_only_lacks_each_part_by_name() {
        let plan = Plan::from_toml("p.toml", SERVERS_ONLY).unwrap();
        let missing = plan.incomplete();
        let has = |s: &str| missing.iter().any(|m| m.contains(s));
        assert!(has("web-01 has no app with ports"), "{missing:#?}");
        assert!(has("required paths"), "{missing:#?}");
        assert!(has("role nginx is a cluster"), "{missing:#?}");
        assert!(has("jump host"), "{missing:#?}");
        assert!(has("package manifest: no package files"), "{missing:#?}");
        assert!(
            has("database server db-01 has no database backup"),
            "{missing:#?}"
        );
        assert_eq!(missing.len(), 6, "{missing:#?}");
    }

    /// Issue 13 item 17: every entry has a Chinese form, in the same order, following the
    /// workflow's rule for Chinese text (`check_zh_text`).
    #[test]
    fn each_missing_part_has_a_chinese_form() {
        use crate::workflow::check_zh_text;
        let plan = Plan::from_toml("p.toml", SERVERS_ONLY).unwrap();
        let mut zh = plan.incomplete_zh();
        assert_eq!(zh.len(), plan.incomplete().len(), "{zh:#?}");
        zh.push(facts_only_incomplete_zh("B7"));
        for z in &zh {
            check_zh_text(z).unwrap_or_else(|e| panic!("{e}"));
        }
        let has = |s: &str| zh.iter().any(|m| m.contains(s));
        assert!(has("服务器：`web-01` 没有带端口的应用"), "{zh:#?}");
        assert!(
            has("虚拟IP：角色 `nginx` 是由 2 台服务器组成的集群"),
            "{zh:#?}"
        );
        assert!(has("数据库服务器 `db-01` 没有数据库备份"), "{zh:#?}");
        assert!(has("跳板机：未声明"), "{zh:#?}");
    }

    #[test]
    fn the_example_plan_is_complete() {
        let text = include_str!("../../../../deploy/examples/plan.toml");
        let plan = Plan::from_toml("plan.toml", text).unwrap();
        assert_eq!(plan.incomplete(), Vec::<String>::new());
    }

    #[test]
    fn database_names() {
        assert!(is_database_name("db"));
        assert!(is_database_name("pg-main_postgresql"));
        assert!(is_database_name("MySQL"));
        assert!(!is_database_name("dbus"));
        assert!(!is_database_name("nginx"));
    }
}
