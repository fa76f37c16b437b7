//! `mac.status`: SELinux or AppArmor enforcing (report only).

use crate::catalog::text::{kv_get, kv_parse, KvStyle};
use crate::catalog::{Ctx, Outcome, Unk};

pub(super) fn audit_mac(ctx: &Ctx) -> Result<Outcome, Unk> {
    if let Some(t) = ctx.read_text("/etc/selinux/config")? {
        let pairs = kv_parse("/etc/selinux/config", &t, KvStyle::Equals)?;
        let mode = kv_get(&pairs, "SELINUX", false)
            .unwrap_or("unset")
            .to_string();
        let mut obs = format!("SELinux config {mode}");
        let mut ok = mode == "enforcing";
        if ctx.root.is_host() {
            match std::fs::read_to_string("/sys/fs/selinux/enforce") {
                Ok(v) => {
                    obs.push_str(&format!(
                        ", running {}",
                        if v.trim() == "1" {
                            "enforcing"
                        } else {
                            "permissive"
                        }
                    ));
                    ok &= v.trim() == "1";
                }
                Err(_) => {
                    obs.push_str(", running disabled");
                    ok = false;
                }
            }
        }
        return Ok(Outcome::new(ok, obs, "enforcing"));
    }
    if ctx.root.is_host() {
        let aa =
            std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").unwrap_or_default();
        let obs = match aa.trim() {
            "" => "no SELinux config, AppArmor not loaded".to_string(),
            v => format!("AppArmor enabled={v}"),
        };
        return Ok(Outcome::new(aa.trim() == "Y", obs, "enforcing"));
    }
    Ok(Outcome::live_only(
        "no /etc/selinux/config",
        "AppArmor state is live: read only when the root prefix is /",
        "enforcing",
    ))
}
