//! Fixture trees for hardening tests: a copy of a fixture with the modes found on customer
//! hosts, and a snapshot of every entry to compare trees byte for byte.
//!
//! Depends only on std and `anyhow`, so the end-to-end tests (another crate) include it with
//! `#[path = ".../crates/preflight-harden/tests/support/tree.rs"] mod tree;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Copies fixture tree `src` to `dst` (files 0644, symlinks kept), then gives the account and
/// SSH files the modes seeded on customer hosts (sshd_config and shadow too open).
pub fn copy_fixture(src: &Path, dst: &Path) -> Result<()> {
    copy_tree(src, dst)?;
    for (p, m) in [
        ("etc/passwd", 0o644),
        ("etc/group", 0o644),
        ("etc/shadow", 0o644),
        ("etc/gshadow", 0o000),
        ("etc/ssh/sshd_config", 0o644),
        ("etc/sudoers", 0o440),
    ] {
        let path = dst.join(p);
        if path.exists() {
            fs::set_permissions(&path, fs::Permissions::from_mode(m))?;
        }
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst)?;
    for e in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ft = e.file_type()?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            fs::copy(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

/// Every entry of a tree: kind, content hash (by `sha256_hex`) or link target, mode, owner.
pub fn snapshot(dir: &Path, sha256_hex: fn(&[u8]) -> String) -> Result<BTreeMap<String, String>> {
    fn walk(
        base: &Path,
        d: &Path,
        hash: fn(&[u8]) -> String,
        out: &mut BTreeMap<String, String>,
    ) -> Result<()> {
        for e in fs::read_dir(d)? {
            let p = e?.path();
            let rel = p.strip_prefix(base)?.display().to_string();
            let m = fs::symlink_metadata(&p)?;
            let v = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p)?.display())
            } else if m.is_dir() {
                walk(base, &p, hash, out)?;
                format!("dir {:o}", m.mode() & 0o7777)
            } else {
                format!(
                    "file {} {:o} {}:{}",
                    hash(&fs::read(&p)?),
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                )
            };
            out.insert(rel, v);
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, sha256_hex, &mut out)?;
    Ok(out)
}
