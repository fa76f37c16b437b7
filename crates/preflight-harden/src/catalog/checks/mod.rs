//! The checks of CHECKS.md: an audit function, the expected value, and (unless report-only,
//! firewall or needing a package) a fix function that computes the wanted file contents.
//!
//! One module per check family, as CHECKS.md groups them: [`accounts`] (`acct.*`, the
//! report-only `auth.*` account checks), [`auth`] (passwords and lockout through PAM),
//! [`session`] (`sess.*`), [`ssh`] (`ssh.*`), [`files`] (`perm.*`), [`logging`] (`audit.*`,
//! `log.*`), [`mac`] (`mac.*`) and [`firewall`] (`fw.*`, audited by the firewall hook). The
//! table below lists them in CHECKS.md order.
//!
//! Fix functions only compute; `catalog/mod.rs` compares, backs up, validates and writes. A fix
//! is computed only for a non-compliant check, and brings it to compliance, so a second apply
//! changes nothing.

mod accounts;
mod auth;
mod files;
mod firewall;
mod logging;
mod mac;
mod session;
mod ssh;

use super::sshd;
use super::text::ColonDb;
use super::{CheckInfo, Ctx, Fix, Outcome, Policy, Unk};

type AuditFn = fn(&Ctx) -> Result<Outcome, Unk>;
type FixFn = fn(&Ctx) -> Result<Fix, Unk>;

/// One catalog entry with its implementation.
pub(crate) struct Check {
    pub info: CheckInfo,
    pub expected: fn(&Policy) -> String,
    pub audit: AuditFn,
    pub fix: Option<FixFn>,
    /// Files whose absence makes the check not applicable (the service is not installed).
    pub requires: &'static [&'static str],
}

/// All checks in CHECKS.md order.
pub(crate) fn all() -> &'static [Check] {
    ALL
}

static ALL: &[Check] = &[
    Check {
        info: CheckInfo {
            id: "acct.pass_max_days",
            title_en: "Maximum password age",
            title_zh: "密码最长使用期限",
            mlps: "L3-CES1-01",
            cis: "5.4.1.1",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!("<= {}", p.pass_max_days),
        audit: |c| accounts::audit_aging(c, &accounts::MAX_DAYS),
        fix: Some(|c| accounts::fix_aging(c, &accounts::MAX_DAYS)),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "acct.pass_min_days",
            title_en: "Minimum days between password changes",
            title_zh: "密码最短使用期限",
            mlps: "L3-CES1-01",
            cis: "5.4.1.2",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!(">= {}", p.pass_min_days),
        audit: |c| accounts::audit_aging(c, &accounts::MIN_DAYS),
        fix: Some(|c| accounts::fix_aging(c, &accounts::MIN_DAYS)),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "acct.pass_warn_age",
            title_en: "Password expiry warning",
            title_zh: "密码过期提前警告天数",
            mlps: "L3-CES1-01",
            cis: "5.4.1.3",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!(">= {}", p.pass_warn_age),
        audit: |c| accounts::audit_aging(c, &accounts::WARN_AGE),
        fix: Some(|c| accounts::fix_aging(c, &accounts::WARN_AGE)),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "acct.inactive",
            title_en: "Disable accounts inactive after password expiry",
            title_zh: "密码过期后账户停用天数",
            mlps: "L3-CES1-07",
            cis: "5.4.1.4",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!("0..={}", p.inactive_days),
        audit: |c| accounts::audit_aging(c, &accounts::INACTIVE),
        fix: Some(|c| accounts::fix_aging(c, &accounts::INACTIVE)),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "auth.pw_minlen",
            title_en: "Minimum password length",
            title_zh: "口令最小长度",
            mlps: "L3-CES1-01",
            cis: "5.3.1",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!(">= {}", p.pw_minlen),
        audit: auth::audit_minlen,
        fix: Some(auth::fix_minlen),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "auth.pw_classes",
            title_en: "Password character classes",
            title_zh: "口令复杂度(字符类别)",
            mlps: "L3-CES1-01",
            cis: "5.3.1",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!(">= {} classes", p.pw_min_classes),
        audit: auth::audit_classes,
        fix: Some(auth::fix_classes),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "auth.pw_history",
            title_en: "Password reuse history",
            title_zh: "口令历史(禁止重复使用)",
            mlps: "L3-CES1-01",
            cis: "5.3.3",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!("remember >= {}", p.pw_remember),
        audit: auth::audit_history,
        fix: Some(auth::fix_history),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "auth.pw_hash",
            title_en: "Password hashing algorithm",
            title_zh: "口令哈希算法",
            mlps: "L3-CES1-01",
            cis: "5.3.4",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| p.pw_hash.clone(),
        audit: auth::audit_hash,
        fix: Some(auth::fix_hash),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "auth.lockout",
            title_en: "Lockout after failed logins",
            title_zh: "登录失败锁定",
            mlps: "L3-CES1-02",
            cis: "5.3.2",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| {
            format!(
                "deny <= {}, unlock_time {}..={} s",
                p.lockout_deny, p.lockout_unlock_min, p.lockout_unlock_max
            )
        },
        audit: auth::audit_lockout,
        fix: Some(auth::fix_lockout),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "auth.no_empty_pw",
            title_en: "No empty passwords",
            title_zh: "禁止空口令",
            mlps: "L3-CES1-01",
            cis: "6.2.1",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |_| "no empty password field; no nullok".into(),
        audit: auth::audit_empty_pw,
        fix: Some(auth::fix_empty_pw),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "auth.uid0_only_root",
            title_en: "Only root has UID 0",
            title_zh: "仅root的UID为0",
            mlps: "L3-CES1-06",
            cis: "6.2.5",
            report_only: true,
            live_state: false,
            firewall: false,
        },
        expected: |_| "only root".into(),
        audit: accounts::audit_uid0,
        fix: None,
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "auth.unique_ids",
            title_en: "Unique user and group ids and names",
            title_zh: "用户和组的ID与名称唯一",
            mlps: "L3-CES1-01",
            cis: "6.2.16-19",
            report_only: true,
            live_state: false,
            firewall: false,
        },
        expected: |_| "no duplicate UID, GID or name".into(),
        audit: accounts::audit_unique,
        fix: None,
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "sess.tmout",
            title_en: "Shell idle timeout",
            title_zh: "会话超时自动退出",
            mlps: "L3-CES1-02",
            cis: "5.4.5",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!("TMOUT 1..={}, readonly, exported", p.tmout),
        audit: session::audit_tmout,
        fix: Some(session::fix_tmout),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "ssh.idle_timeout",
            title_en: "SSH idle timeout",
            title_zh: "SSH空闲超时",
            mlps: "L3-CES1-02",
            cis: "5.2.12",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| {
            format!(
                "ClientAliveInterval 1..={}, ClientAliveCountMax 1..={}",
                p.ssh_client_alive_interval, p.ssh_client_alive_count_max
            )
        },
        audit: ssh::audit_ssh_idle,
        fix: Some(ssh::fix_ssh_idle),
        requires: &[sshd::MAIN],
    },
    Check {
        info: CheckInfo {
            id: "ssh.protocol2",
            title_en: "SSH protocol 2 only (OpenSSH version)",
            title_zh: "仅SSH协议2(OpenSSH版本)",
            mlps: "L3-CES1-03",
            cis: "5.2.2",
            report_only: false,
            live_state: true,
            firewall: false,
        },
        expected: |p| format!("OpenSSH >= {}.{}", p.openssh_min.0, p.openssh_min.1),
        audit: ssh::audit_ssh_version,
        fix: None,
        requires: &[sshd::MAIN],
    },
    Check {
        info: CheckInfo {
            id: "ssh.permit_root_login",
            title_en: "SSH root login",
            title_zh: "SSH禁止root远程登录",
            mlps: "L3-CES1-06",
            cis: "5.2.8",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |_| "no (prohibit-password without a sudo-capable account)".into(),
        audit: ssh::audit_root_login,
        fix: Some(ssh::fix_root_login),
        requires: &[sshd::MAIN],
    },
    Check {
        info: CheckInfo {
            id: "ssh.permit_empty_pw",
            title_en: "SSH empty passwords",
            title_zh: "SSH禁止空口令登录",
            mlps: "L3-CES1-01",
            cis: "5.2.9",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |_| "no".into(),
        audit: ssh::audit_ssh_empty,
        fix: Some(ssh::fix_ssh_empty),
        requires: &[sshd::MAIN],
    },
    Check {
        info: CheckInfo {
            id: "ssh.max_auth_tries",
            title_en: "SSH maximum authentication attempts",
            title_zh: "SSH最大认证尝试次数",
            mlps: "L3-CES1-02",
            cis: "5.2.5",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!("<= {}", p.ssh_max_auth_tries),
        audit: ssh::audit_ssh_tries,
        fix: Some(ssh::fix_ssh_tries),
        requires: &[sshd::MAIN],
    },
    Check {
        info: CheckInfo {
            id: "ssh.misc",
            title_en: "SSH logging, forwarding and trust settings",
            title_zh: "SSH日志、转发与信任设置",
            mlps: "L3-CES1-05, L3-CES1-12",
            cis: "5.2.1-7, 5.2.10",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |_| {
            "LogLevel INFO, X11Forwarding no, IgnoreRhosts yes, HostbasedAuthentication no, PermitUserEnvironment no, sshd_config 0600 root".into()
        },
        audit: ssh::audit_ssh_misc,
        fix: Some(ssh::fix_ssh_misc),
        requires: &[sshd::MAIN],
    },
    Check {
        info: CheckInfo {
            id: "ssh.no_plaintext_remote",
            title_en: "No plaintext remote login services",
            title_zh: "禁用明文远程管理服务",
            mlps: "L3-CES1-03, L3-CES1-18",
            cis: "",
            report_only: false,
            live_state: true,
            firewall: false,
        },
        expected: |_| "telnet, rsh, rlogin, rexec, ftp disabled and not listening".into(),
        audit: ssh::audit_plaintext,
        fix: Some(ssh::fix_plaintext),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "acct.system_nologin",
            title_en: "System accounts cannot log in",
            title_zh: "系统账户禁止登录",
            mlps: "L3-CES1-05, L3-CES1-07",
            cis: "5.4.2",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |_| "nologin or false for UID < UID_MIN except root".into(),
        audit: accounts::audit_nologin,
        fix: Some(accounts::fix_nologin),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "acct.su_wheel",
            title_en: "su restricted to wheel",
            title_zh: "su限制为wheel组",
            mlps: "L3-CES1-08",
            cis: "5.6",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |_| "auth required pam_wheel.so use_uid".into(),
        audit: accounts::audit_su_wheel,
        fix: Some(accounts::fix_su_wheel),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "perm.umask",
            title_en: "Default umask",
            title_zh: "默认umask",
            mlps: "L3-CES1-05",
            cis: "5.4.4",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| format!("{:03o} or stricter", p.umask),
        audit: files::audit_umask,
        fix: Some(files::fix_umask),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "perm.critical_files",
            title_en: "Permissions of account files",
            title_zh: "账户文件权限",
            mlps: "L3-CES1-09, L3-CES1-10",
            cis: "6.1.2-9",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |_| "passwd 0644, shadow 0000, gshadow 0000, group 0644, owner root:root".into(),
        audit: files::audit_perms,
        fix: Some(files::fix_perms),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "audit.auditd",
            title_en: "auditd enabled and running",
            title_zh: "审计服务启用并运行",
            mlps: "L3-CES1-12, L3-CES1-15",
            cis: "4.1.2-3",
            report_only: false,
            live_state: true,
            firewall: false,
        },
        expected: |_| "enabled and running".into(),
        audit: logging::audit_auditd,
        fix: Some(logging::fix_auditd),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "audit.rules",
            title_en: "Audit rules",
            title_zh: "审计规则",
            mlps: "L3-CES1-12, L3-CES1-13",
            cis: "4.1.4-18",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |_| "identity, sudoers, logins, time, privileged, deletes, modules".into(),
        audit: logging::audit_rules,
        fix: Some(logging::fix_rules),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "audit.retention",
            title_en: "Audit and log retention",
            title_zh: "审计与日志留存",
            mlps: "L3-CES1-14",
            cis: "4.1.1.x",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |p| {
            format!(
                "max_log_file_action keep_logs; syslog kept >= {} days",
                p.log_retention_days
            )
        },
        audit: logging::audit_retention,
        fix: Some(logging::fix_retention),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "log.rsyslog",
            title_en: "rsyslog enabled, log file mode",
            title_zh: "rsyslog启用及日志文件权限",
            mlps: "L3-CES1-12, L3-CES1-14",
            cis: "4.2.1.x",
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected: |_| "enabled; $FileCreateMode 0640 or stricter".into(),
        audit: logging::audit_rsyslog,
        fix: Some(logging::fix_rsyslog),
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "mac.status",
            title_en: "SELinux / AppArmor enforcing",
            title_zh: "强制访问控制(SELinux/AppArmor)",
            mlps: "L3-CES1-11",
            cis: "1.6.x",
            report_only: true,
            live_state: false,
            firewall: false,
        },
        expected: |_| "enforcing".into(),
        audit: mac::audit_mac,
        fix: None,
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "fw.single_backend",
            title_en: "Exactly one firewall backend",
            title_zh: "仅启用一种防火墙",
            mlps: "L3-CES1-18",
            cis: "",
            report_only: false,
            live_state: false,
            firewall: true,
        },
        expected: firewall::expected,
        audit: firewall::audit,
        fix: None,
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "fw.default_deny_in",
            title_en: "Default deny inbound",
            title_zh: "入站默认拒绝",
            mlps: "L3-CES1-18",
            cis: "3.6.2-4",
            report_only: false,
            live_state: false,
            firewall: true,
        },
        expected: firewall::expected,
        audit: firewall::audit,
        fix: None,
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "fw.allowlist_ports",
            title_en: "Only planned ports open",
            title_zh: "仅开放计划端口",
            mlps: "L3-CES1-18, L3-CES1-19",
            cis: "3.6.5",
            report_only: false,
            live_state: false,
            firewall: true,
        },
        expected: firewall::expected,
        audit: firewall::audit,
        fix: None,
        requires: &[],
    },
    Check {
        info: CheckInfo {
            id: "fw.mgmt_source",
            title_en: "Management access restricted by source",
            title_zh: "管理端口限制来源地址",
            mlps: "L3-CES1-19",
            cis: "3.4.2-3",
            report_only: false,
            live_state: false,
            firewall: true,
        },
        expected: firewall::expected,
        audit: firewall::audit,
        fix: None,
        requires: &[],
    },
];

fn need_text(ctx: &Ctx, path: &str) -> Result<String, Unk> {
    ctx.read_text(path)?
        .ok_or_else(|| Unk(format!("{path} is missing")))
}

fn db(ctx: &Ctx, path: &str, fields: usize) -> Result<ColonDb, Unk> {
    Ok(ColonDb::parse(path, &need_text(ctx, path)?, fields)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn catalog_ids_unique_and_complete() {
        let ids: BTreeSet<&str> = all().iter().map(|c| c.info.id).collect();
        assert_eq!(ids.len(), all().len());
        assert_eq!(all().len(), 33);
        assert!(all()
            .iter()
            .filter(|c| !c.info.firewall)
            .all(|c| !c.info.title_zh.is_empty() && !c.info.mlps.is_empty()));
        assert!(all()
            .iter()
            .filter(|c| c.info.report_only)
            .all(|c| c.fix.is_none()));
    }

    /// The sshd checks are not applicable without sshd_config; the plaintext-services check
    /// reads no sshd file and stays applicable.
    #[test]
    fn ssh_checks_require_sshd_config() {
        for c in all() {
            let sshd_check =
                c.info.id.starts_with("ssh.") && c.info.id != "ssh.no_plaintext_remote";
            let want: &[&str] = if sshd_check { &[sshd::MAIN] } else { &[] };
            assert_eq!(c.requires, want, "{}", c.info.id);
        }
    }
}
