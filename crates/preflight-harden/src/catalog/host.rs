//! Host detection from `/etc/os-release` (ID, ID_LIKE, VERSION_ID) and from the files present.

use super::Ctx;

/// Distribution family, from os-release (used for notes and defaults only; layouts come from
/// the files present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// RHEL, CentOS, Rocky, Alma, Fedora, openEuler, Kylin Server.
    RedHat,
    /// Debian, Ubuntu, UOS, Kylin Desktop.
    Debian,
    /// Anything else.
    #[default]
    Unknown,
}

/// PAM layout, from the files present (CHECKS.md safety rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PamLayout {
    /// `/etc/pam.d/system-auth` + `password-auth`.
    SystemAuth,
    /// `/etc/pam.d/common-*`.
    Common,
    /// Neither.
    #[default]
    Unknown,
}

/// What was detected about the host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Host {
    /// os-release ID.
    pub id: String,
    /// os-release ID_LIKE words.
    pub id_like: Vec<String>,
    /// os-release VERSION_ID.
    pub version_id: String,
    /// Family.
    pub family: Family,
    /// PAM layout.
    pub pam: PamLayout,
    /// `/etc/pam.d/system-auth` is managed by authselect.
    pub authselect: bool,
    /// EL7-style authconfig present (it rewrites system-auth).
    pub authconfig: bool,
    /// pam_faillock.so present.
    pub faillock: bool,
    /// pam_tally2.so present.
    pub tally2: bool,
    /// pam_pwquality.so present.
    pub pwquality: bool,
    /// Path of nologin.
    pub nologin: String,
}

/// Directories searched for PAM modules.
pub const PAM_LIB_DIRS: &[&str] = &[
    "/usr/lib64/security",
    "/lib64/security",
    "/usr/lib/security",
    "/lib/security",
    "/usr/lib/x86_64-linux-gnu/security",
    "/lib/x86_64-linux-gnu/security",
    "/usr/lib/aarch64-linux-gnu/security",
    "/lib/aarch64-linux-gnu/security",
    "/usr/lib/loongarch64-linux-gnu/security",
];

impl Host {
    /// True for the EL family by os-release (also openEuler and Kylin Server).
    pub fn is_el7(&self) -> bool {
        self.family == Family::RedHat && self.version_id.split('.').next() == Some("7")
    }
}

fn unquote(v: &str) -> String {
    v.trim().trim_matches('"').trim_matches('\'').to_string()
}

/// True if a PAM module is present in one of [`PAM_LIB_DIRS`].
pub fn has_module(ctx: &Ctx, name: &str) -> bool {
    PAM_LIB_DIRS
        .iter()
        .any(|d| ctx.root.exists(&format!("{d}/{name}.so")))
}

pub(crate) fn detect(ctx: &Ctx) -> Host {
    let mut h = Host::default();
    if let Ok(Some(t)) = ctx.read_text("/etc/os-release") {
        for l in t.lines() {
            if let Some((k, v)) = l.split_once('=') {
                match k.trim() {
                    "ID" => h.id = unquote(v).to_ascii_lowercase(),
                    "ID_LIKE" => {
                        h.id_like = unquote(v)
                            .split_whitespace()
                            .map(str::to_ascii_lowercase)
                            .collect()
                    }
                    "VERSION_ID" => h.version_id = unquote(v),
                    _ => {}
                }
            }
        }
    }
    let words: Vec<&str> = std::iter::once(h.id.as_str())
        .chain(h.id_like.iter().map(String::as_str))
        .collect();
    h.family = if words.iter().any(|w| {
        matches!(
            *w,
            "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "openeuler" | "kylin" | "anolis"
        )
    }) {
        Family::RedHat
    } else if words
        .iter()
        .any(|w| matches!(*w, "debian" | "ubuntu" | "uos" | "deepin"))
    {
        Family::Debian
    } else {
        Family::Unknown
    };
    let r = ctx.root;
    h.pam = if r.exists("/etc/pam.d/system-auth") && r.exists("/etc/pam.d/password-auth") {
        PamLayout::SystemAuth
    } else if r.exists("/etc/pam.d/common-auth") && r.exists("/etc/pam.d/common-password") {
        PamLayout::Common
    } else {
        PamLayout::Unknown
    };
    h.authselect = r.exists("/etc/authselect/authselect.conf")
        && matches!(
            r.entry("/etc/pam.d/system-auth"),
            Ok(super::root::Entry::Symlink(t)) if t.contains("authselect")
        );
    h.authconfig = r.exists("/usr/sbin/authconfig") || (h.is_el7() && !h.authselect);
    h.faillock = has_module(ctx, "pam_faillock");
    h.tally2 = has_module(ctx, "pam_tally2");
    h.pwquality = has_module(ctx, "pam_pwquality");
    h.nologin = ["/usr/sbin/nologin", "/sbin/nologin"]
        .iter()
        .find(|p| r.exists(p))
        .map(|p| p.to_string())
        .unwrap_or_else(|| match h.family {
            Family::Debian => "/usr/sbin/nologin".into(),
            _ => "/sbin/nologin".into(),
        });
    h
}
