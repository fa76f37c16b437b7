//! Host inventory: what a deployer asks about a server before anything is installed on it.
//!
//! Everything is read, nothing is changed: /proc, /sys, /etc/os-release, statvfs, uname,
//! getrlimit and adjtimex. The [`Inventory`] struct mirrors the protobuf message
//! `preflight.v1.Inventory` field by field (same names, same units), so the agent converts it
//! 1:1. Parsers take text and are tested on samples; [`collect`] feeds them the live files.
//!
//! Values follow what the usual tools print, so an operator can cross-check them: CPU topology
//! as `lscpu` counts it, disks as `lsblk -d` lists them, mounts and sizes as `df` shows them by
//! default.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use thiserror::Error;
use tracing::{debug, warn};

/// How long a statvfs of a network filesystem may take before its sizes are reported as 0:
/// a hung NFS server must not hang the inventory.
const REMOTE_STATVFS_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest text file read from /proc, /sys or /etc; real ones are far smaller.
const MAX_TEXT_FILE: u64 = 4 << 20;

/// Most mounts, disks or interfaces reported; more means something is wrong with the host.
const MAX_ITEMS: usize = 4096;

/// Distribution identity from /etc/os-release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`.
    pub id: String,
    /// `ID_LIKE`, e.g. `rhel fedora`; empty when absent.
    pub id_like: String,
    /// `VERSION_ID`, e.g. `12`.
    pub version_id: String,
    /// `PRETTY_NAME`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: String,
}

/// Processor model and topology, counted as `lscpu` counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// Model name, e.g. `Intel(R) Xeon(R) Processor`.
    pub model: String,
    /// Physical packages (lscpu "Socket(s)").
    pub sockets: u32,
    /// Physical cores in total (lscpu "Core(s) per socket" x "Socket(s)").
    pub cores: u32,
    /// Logical CPUs online (lscpu "On-line CPU(s) list" count).
    pub threads: u32,
}

/// Memory and swap in bytes, from /proc/meminfo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable` (`MemFree` on kernels older than 3.14).
    pub available_bytes: u64,
    /// `SwapTotal`.
    pub swap_total_bytes: u64,
    /// `SwapFree`.
    pub swap_free_bytes: u64,
}

/// A partition of a [`Disk`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// Kernel name, e.g. `sda1`.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Filesystem type from udev or from the mount table; empty when unknown.
    pub fs_type: String,
}

/// A whole block device, as `lsblk -d` lists it (RAM disks and unused loop devices left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// Kernel name, e.g. `sda`, `nvme0n1`.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// True for spinning disks (sysfs `queue/rotational`).
    pub rotational: bool,
    /// Model string from sysfs, trimmed; empty when the device has none.
    pub model: String,
    /// Partitions in kernel order.
    pub partitions: Vec<Partition>,
}

/// A mounted filesystem with sizes computed as `df` computes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Mount source, e.g. `/dev/sda1` or `tmpfs`.
    pub device: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// Filesystem type, e.g. `ext4`.
    pub fs_type: String,
    /// `f_blocks * f_frsize`.
    pub size_bytes: u64,
    /// `(f_blocks - f_bfree) * f_frsize`.
    pub used_bytes: u64,
    /// `f_bavail * f_frsize`: available to unprivileged users, as df shows.
    pub free_bytes: u64,
}

/// A network interface and its addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Hardware address `aa:bb:cc:dd:ee:ff`; empty when the link has none.
    pub mac: String,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// MTU in bytes.
    pub mtu: u32,
    /// Addresses in CIDR notation, e.g. `10.0.0.5/24`, `fe80::1/64`.
    pub addresses: Vec<String>,
}

/// Kernel clock synchronisation state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClockSync {
    /// False when the kernel flags the clock unsynchronised (STA_UNSYNC).
    pub synchronized: bool,
    /// How it was determined: `adjtimex`, or `unavailable` when the call failed.
    pub source: String,
    /// The kernel's maximum error estimate in microseconds.
    pub max_error_us: i64,
}

/// RLIMIT_NOFILE of the collecting process; `u64::MAX` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpenFilesLimit {
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Everything the inventory reports about one host; mirrors `preflight.v1.Inventory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// Host name (uname nodename).
    pub hostname: String,
    /// Distribution identity.
    pub os: OsRelease,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Machine architecture (`uname -m`).
    pub arch: String,
    /// Processor model and topology.
    pub cpu: Cpu,
    /// Memory and swap.
    pub memory: Memory,
    /// Whole block devices with their partitions.
    pub disks: Vec<Disk>,
    /// Mounted filesystems as `df` shows them by default.
    pub mounts: Vec<Mount>,
    /// Network interfaces.
    pub interfaces: Vec<Interface>,
    /// Clock synchronisation.
    pub clock: ClockSync,
    /// `enforcing`, `permissive`, `disabled` or `absent`.
    pub selinux: String,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// Open-files limit.
    pub open_files: OpenFilesLimit,
    /// Left empty here; the agent fills in its own version.
    pub agent_version: String,
    /// When the inventory was collected, milliseconds since the Unix epoch.
    pub collected_at_unix_ms: i64,
}

/// Why the inventory could not be collected.
#[derive(Debug, Error)]
pub enum InventoryError {
    /// A file the inventory cannot do without could not be read.
    #[error("cannot read {path}: {source}; is /proc (or /sys) mounted and readable?")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A kernel file had an unexpected format.
    #[error("cannot parse {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Syscall {
        /// The call, e.g. `uname`.
        call: &'static str,
        /// The errno.
        source: nix::Error,
    },
}

/// Collects the inventory of this host.
///
/// Files every Linux has (/proc/meminfo, /proc/cpuinfo, /proc/self/mountinfo, uname) are
/// required; optional sources (os-release, sysfs block devices, udev data, SELinux, adjtimex)
/// degrade to empty values with a warning, so a container or an unusual host still answers.
pub fn collect() -> Result<Inventory, InventoryError> {
    let uts = nix::sys::utsname::uname().map_err(|source| InventoryError::Syscall {
        call: "uname",
        source,
    })?;
    let hostname = uts.nodename().to_string_lossy().into_owned();
    let kernel = uts.release().to_string_lossy().into_owned();
    let arch = uts.machine().to_string_lossy().into_owned();

    let os = match read_text(Path::new("/etc/os-release"))
        .or_else(|_| read_text(Path::new("/usr/lib/os-release")))
    {
        Ok(text) => parse_os_release(&text),
        Err(e) => {
            warn!(error = %e, "no os-release file, reporting an empty distribution");
            OsRelease::default()
        }
    };

    let cpuinfo = read_required(Path::new("/proc/cpuinfo"))?;
    let mut cpu = read_cpu_topology(Path::new("/sys/devices/system/cpu"));
    cpu.model = parse_cpu_model(&cpuinfo);
    if cpu.threads == 0 {
        // No sysfs: count processors in cpuinfo, one core per thread, one socket.
        cpu.threads = count_cpuinfo_processors(&cpuinfo).max(1);
        cpu.cores = cpu.threads;
        cpu.sockets = 1;
    }

    let meminfo_path = Path::new("/proc/meminfo");
    let memory =
        parse_meminfo(&read_required(meminfo_path)?).map_err(|detail| InventoryError::Parse {
            path: meminfo_path.into(),
            detail,
        })?;

    let mountinfo_path = Path::new("/proc/self/mountinfo");
    let mount_table = parse_mountinfo(&read_required(mountinfo_path)?);
    let disks = read_disks(
        Path::new("/sys/block"),
        Path::new("/run/udev/data"),
        &mount_table,
    );
    let mounts = df_mounts(&mount_table);
    let interfaces = read_interfaces();
    let clock = read_clock();
    let selinux = read_selinux(
        Path::new("/sys/fs/selinux"),
        Path::new("/etc/selinux/config"),
    );

    let uptime_path = Path::new("/proc/uptime");
    let uptime_s =
        parse_uptime(&read_required(uptime_path)?).map_err(|detail| InventoryError::Parse {
            path: uptime_path.into(),
            detail,
        })?;

    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(|source| InventoryError::Syscall {
        call: "getrlimit(RLIMIT_NOFILE)",
        source,
    })?;

    let collected_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);

    Ok(Inventory {
        hostname,
        os,
        kernel,
        arch,
        cpu,
        memory,
        disks,
        mounts,
        interfaces,
        clock,
        selinux,
        uptime_s,
        open_files: OpenFilesLimit { soft, hard },
        agent_version: String::new(),
        collected_at_unix_ms,
    })
}

/// Reads a small text file, refusing anything larger than [`MAX_TEXT_FILE`].
fn read_text(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_TEXT_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn read_required(path: &Path) -> Result<String, InventoryError> {
    read_text(path).map_err(|source| InventoryError::Read {
        path: path.into(),
        source,
    })
}

/// Reads a one-line sysfs attribute, trimmed; None when absent or unreadable.
fn read_attr(path: &Path) -> Option<String> {
    read_text(path).ok().map(|s| s.trim().to_string())
}

/// Parses os-release text (shell-like `KEY=value` lines, values optionally quoted).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut out = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let value = unquote_shell(raw.trim());
        match key.trim() {
            "ID" => out.id = value,
            "ID_LIKE" => out.id_like = value,
            "VERSION_ID" => out.version_id = value,
            "PRETTY_NAME" => out.pretty_name = value,
            _ => {}
        }
    }
    out
}

/// Removes one level of shell quoting as os-release(5) allows it.
fn unquote_shell(raw: &str) -> String {
    let bytes = raw.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'\'' && bytes[bytes.len() - 1] == b'\'' {
        return raw[1..raw.len() - 1].to_string();
    }
    let inner = if bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"' {
        &raw[1..raw.len() - 1]
    } else {
        raw
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('"' | '\\' | '$' | '`')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses /proc/meminfo text into bytes. Errors name the missing key.
pub fn parse_meminfo(text: &str) -> Result<Memory, String> {
    let mut values: HashMap<&str, u64> = HashMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(number)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match parts.next() {
            Some("kB") => number.saturating_mul(1024),
            _ => number,
        };
        values.insert(key.trim(), bytes);
    }
    let get = |key: &str| {
        values
            .get(key)
            .copied()
            .ok_or_else(|| format!("no {key} line"))
    };
    Ok(Memory {
        total_bytes: get("MemTotal")?,
        available_bytes: get("MemAvailable").or_else(|_| get("MemFree"))?,
        swap_total_bytes: get("SwapTotal").unwrap_or(0),
        swap_free_bytes: get("SwapFree").unwrap_or(0),
    })
}

/// The processor model from /proc/cpuinfo: `model name` on x86, the closest equivalent on
/// other architectures; empty when none is given.
pub fn parse_cpu_model(cpuinfo: &str) -> String {
    for key in ["model name", "Processor", "cpu model", "cpu", "uarch"] {
        for line in cpuinfo.lines() {
            if let Some((k, v)) = line.split_once(':') {
                if k.trim() == key && !v.trim().is_empty() {
                    return v.trim().to_string();
                }
            }
        }
    }
    String::new()
}

fn count_cpuinfo_processors(cpuinfo: &str) -> u32 {
    let n = cpuinfo
        .lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim() == "processor")
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Parses a kernel CPU list such as `0-3,8,10-11`. Errors name the bad element.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let lo: u32 = lo.parse().map_err(|_| format!("bad cpu number {part:?}"))?;
        let hi: u32 = hi.parse().map_err(|_| format!("bad cpu number {part:?}"))?;
        if hi < lo || hi - lo > 65_535 {
            return Err(format!("bad cpu range {part:?}"));
        }
        out.extend(lo..=hi);
    }
    Ok(out)
}

/// Counts sockets, cores and threads from a sysfs cpu directory
/// (`/sys/devices/system/cpu`), as lscpu does: sockets are distinct physical package ids,
/// cores distinct (package, die, core) ids, threads the online CPUs. The model is left empty.
/// Returns zeros when the directory is missing.
pub fn read_cpu_topology(cpu_dir: &Path) -> Cpu {
    let online = read_attr(&cpu_dir.join("online"))
        .and_then(|s| parse_cpu_list(&s).ok())
        .unwrap_or_default();
    let mut packages = BTreeSet::new();
    let mut cores = BTreeSet::new();
    for cpu in &online {
        let topo = cpu_dir.join(format!("cpu{cpu}/topology"));
        let id = |name: &str| {
            read_attr(&topo.join(name))
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let package = id("physical_package_id");
        let die = id("die_id");
        let core = id("core_id");
        packages.insert(package);
        cores.insert((package, die, core));
    }
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Cpu {
        model: String::new(),
        sockets: count(packages.len()),
        cores: count(cores.len()),
        threads: count(online.len()),
    }
}

/// One line of /proc/self/mountinfo, the fields the inventory needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// The directory of the filesystem that is mounted (not `/` for bind mounts).
    pub root: String,
    /// Mount point, unescaped.
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source, unescaped.
    pub source: String,
}

/// Parses /proc/self/mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        // id parent maj:min root mount_point options [optional...] - fstype source superopts
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 3 {
            continue;
        }
        let Some((major, minor)) = fields[2].split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        out.push(MountEntry {
            major,
            minor,
            root: unescape_octal(fields[3]),
            mount_point: unescape_octal(fields[4]),
            fs_type: fields[sep + 1].to_string(),
            source: unescape_octal(fields[sep + 2]),
        });
        if out.len() >= MAX_ITEMS * 4 {
            break;
        }
    }
    out
}

/// Undoes the kernel's `\040`-style escaping of spaces, tabs, newlines and backslashes.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystem types that `df` treats as dummies and hides by default (gnulib mountlist.c).
const DF_DUMMY_TYPES: &[&str] = &[
    "autofs",
    "proc",
    "subfs",
    "debugfs",
    "devpts",
    "fusectl",
    "fuse.portal",
    "mqueue",
    "rpc_pipefs",
    "sysfs",
    "devfs",
    "kernfs",
    "ignore",
    "none",
    "rootfs",
];

/// Network filesystems whose statvfs can hang on a dead server.
const REMOTE_TYPES: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ncpfs",
    "afs",
    "ceph",
    "glusterfs",
    "9p",
    "fuse.sshfs",
    "fuse.glusterfs",
    "gfs2",
    "ocfs2",
    "lustre",
];

/// The mount entries `df` shows by default, before the zero-size filter: dummy filesystem
/// types left out, and one entry per device id (`dev_of`, the st_dev of the mount point, None
/// when it cannot be stat'ed) chosen by df's rules (gnulib/coreutils `filter_mount_list`): a
/// source naming a device path wins over one that does not, a mount point nearer the root wins
/// unless it shows a deeper part of the filesystem (bind mounts), and an over-mount of the same
/// mount point by another source wins. The kept entry takes the place of the device's first one.
fn df_select(
    table: &[MountEntry],
    dev_of: impl Fn(&MountEntry) -> Option<u64>,
) -> Vec<&MountEntry> {
    let mut kept: Vec<(u64, &MountEntry)> = Vec::new();
    for me in table {
        if DF_DUMMY_TYPES.contains(&me.fs_type.as_str()) {
            continue;
        }
        let Some(dev) = dev_of(me) else {
            continue;
        };
        if let Some(slot) = kept.iter_mut().find(|(d, _)| *d == dev) {
            let old = slot.1;
            let target_nearer_root = old.mount_point.len() > me.mount_point.len();
            let source_below_root = old.root.len() < me.root.len();
            let replace = (me.source.contains('/') && !old.source.contains('/'))
                || (target_nearer_root && !source_below_root)
                || (old.source != me.source && old.mount_point == me.mount_point);
            if replace {
                slot.1 = me;
            }
        } else {
            kept.push((dev, me));
        }
        if kept.len() >= MAX_ITEMS {
            warn!(limit = MAX_ITEMS, "mount table truncated");
            break;
        }
    }
    kept.into_iter().map(|(_, me)| me).collect()
}

/// Selects and sizes the mounts that `df` shows by default: dummy filesystem types and
/// filesystems with zero blocks are left out, and mounts of one device (bind mounts,
/// over-mounts) are reduced to one entry by df's rules.
fn df_mounts(table: &[MountEntry]) -> Vec<Mount> {
    let kept = df_select(table, |me| {
        // stat can hang on a dead network server just as statvfs can: for those, the device
        // numbers of the mount table stand in for the stat.
        if REMOTE_TYPES.contains(&me.fs_type.as_str()) {
            Some(libc::makedev(me.major, me.minor))
        } else {
            fs::metadata(&me.mount_point).ok().map(|m| m.dev())
        }
    });
    let mut out = Vec::new();
    for me in kept {
        let st = match statvfs_bounded(me) {
            StatOutcome::Sized(st) if st.blocks > 0 => st,
            StatOutcome::Sized(_) | StatOutcome::Failed => continue,
            // Still listed, so the operator sees the dead network mount.
            StatOutcome::TimedOut => FsStat {
                blocks: 0,
                bfree: 0,
                bavail: 0,
                frsize: 0,
            },
        };
        out.push(Mount {
            device: me.source.clone(),
            mount_point: me.mount_point.clone(),
            fs_type: me.fs_type.clone(),
            size_bytes: st.blocks.saturating_mul(st.frsize),
            used_bytes: st.blocks.saturating_sub(st.bfree).saturating_mul(st.frsize),
            free_bytes: st.bavail.saturating_mul(st.frsize),
        });
    }
    out
}

/// What a bounded statvfs gave.
enum StatOutcome {
    Sized(FsStat),
    Failed,
    TimedOut,
}

#[derive(Debug, Clone, Copy)]
struct FsStat {
    blocks: u64,
    bfree: u64,
    bavail: u64,
    frsize: u64,
}

fn statvfs_now(path: &str) -> Option<FsStat> {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => Some(FsStat {
            blocks: s.blocks(),
            bfree: s.blocks_free(),
            bavail: s.blocks_available(),
            frsize: s.fragment_size(),
        }),
        Err(e) => {
            debug!(mount_point = path, error = %e, "statvfs failed, mount left out");
            None
        }
    }
}

/// statvfs, on a helper thread with a deadline for network filesystems.
fn statvfs_bounded(me: &MountEntry) -> StatOutcome {
    if !REMOTE_TYPES.contains(&me.fs_type.as_str()) {
        return match statvfs_now(&me.mount_point) {
            Some(st) => StatOutcome::Sized(st),
            None => StatOutcome::Failed,
        };
    }
    let (tx, rx) = mpsc::channel();
    let path = me.mount_point.clone();
    let spawned = std::thread::Builder::new()
        .name("statvfs".into())
        .spawn(move || {
            // The receiver may have given up; nothing to do then.
            let _ = tx.send(statvfs_now(&path));
        });
    if spawned.is_err() {
        return StatOutcome::Failed;
    }
    match rx.recv_timeout(REMOTE_STATVFS_TIMEOUT) {
        Ok(Some(st)) => StatOutcome::Sized(st),
        Ok(None) => StatOutcome::Failed,
        Err(_) => {
            warn!(mount_point = %me.mount_point, fs_type = %me.fs_type,
                  "statvfs did not answer in time, sizes reported as 0");
            StatOutcome::TimedOut
        }
    }
}

/// Lists whole block devices under `sys_block` (normally /sys/block) as `lsblk -d` does:
/// RAM disks (major 1) and loop devices without a backing file (size 0) are left out.
/// Partition filesystem types come from udev's database under `udev_data`, else from the
/// mount table.
pub fn read_disks(sys_block: &Path, udev_data: &Path, mounts: &[MountEntry]) -> Vec<Disk> {
    let Ok(entries) = fs::read_dir(sys_block) else {
        warn!(path = %sys_block.display(), "no block device directory, no disks reported");
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.truncate(MAX_ITEMS);
    let mut disks = Vec::new();
    for name in names {
        let dir = sys_block.join(&name);
        let (major, _) = read_attr(&dir.join("dev"))
            .and_then(|d| parse_dev_numbers(&d))
            .unwrap_or((0, 0));
        let size_bytes = sectors_to_bytes(read_attr(&dir.join("size")));
        if major == 1 || (name.starts_with("loop") && size_bytes == 0) {
            continue;
        }
        let mut partitions = Vec::new();
        if let Ok(children) = fs::read_dir(&dir) {
            let mut parts: Vec<String> = children
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|child| dir.join(child).join("partition").exists())
                .collect();
            parts.sort_by_key(|p| {
                read_attr(&dir.join(p).join("partition"))
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(u32::MAX)
            });
            for part in parts.into_iter().take(MAX_ITEMS) {
                let pdir = dir.join(&part);
                let dev = read_attr(&pdir.join("dev")).and_then(|d| parse_dev_numbers(&d));
                partitions.push(Partition {
                    size_bytes: sectors_to_bytes(read_attr(&pdir.join("size"))),
                    fs_type: dev
                        .map(|(ma, mi)| partition_fs_type(udev_data, ma, mi, mounts))
                        .unwrap_or_default(),
                    name: part,
                });
            }
        }
        disks.push(Disk {
            size_bytes,
            rotational: read_attr(&dir.join("queue/rotational")).as_deref() == Some("1"),
            model: read_attr(&dir.join("device/model")).unwrap_or_default(),
            partitions,
            name,
        });
    }
    disks
}

fn parse_dev_numbers(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// sysfs block sizes are in 512-byte sectors whatever the device's sector size.
fn sectors_to_bytes(attr: Option<String>) -> u64 {
    attr.and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_mul(512)
}

fn partition_fs_type(udev_data: &Path, major: u32, minor: u32, mounts: &[MountEntry]) -> String {
    if let Ok(text) = read_text(&udev_data.join(format!("b{major}:{minor}"))) {
        if let Some(t) = text.lines().find_map(|l| l.strip_prefix("E:ID_FS_TYPE=")) {
            return t.to_string();
        }
    }
    mounts
        .iter()
        .find(|m| m.major == major && m.minor == minor)
        .map(|m| m.fs_type.clone())
        .unwrap_or_default()
}

/// Interfaces from getifaddrs, in kernel order, with MTU from sysfs.
fn read_interfaces() -> Vec<Interface> {
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "getifaddrs failed, no interfaces reported");
            return Vec::new();
        }
    };
    let mut out: Vec<Interface> = Vec::new();
    for ifa in addrs {
        let idx = match out.iter().position(|i| i.name == ifa.interface_name) {
            Some(i) => i,
            None => {
                if out.len() >= MAX_ITEMS {
                    continue;
                }
                let mtu = read_attr(
                    &Path::new("/sys/class/net")
                        .join(&ifa.interface_name)
                        .join("mtu"),
                )
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
                out.push(Interface {
                    name: ifa.interface_name.clone(),
                    mtu,
                    ..Interface::default()
                });
                out.len() - 1
            }
        };
        let iface = &mut out[idx];
        iface.up |= ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        let Some(addr) = ifa.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            if let Some(mac) = link.addr() {
                if mac.iter().any(|b| *b != 0) {
                    iface.mac = format_mac(&mac);
                }
            }
            continue;
        }
        let ip: IpAddr = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let prefix = ifa
            .netmask
            .and_then(|m| {
                m.as_sockaddr_in()
                    .map(|v4| u32::from(v4.ip()).count_ones())
                    .or_else(|| {
                        m.as_sockaddr_in6()
                            .map(|v6| u128::from(v6.ip()).count_ones())
                    })
            })
            .unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
        iface.addresses.push(format!("{ip}/{prefix}"));
    }
    out
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Clock state from adjtimex(2) in read-only mode (modes = 0).
fn read_clock() -> ClockSync {
    // SAFETY: timex is a plain C struct for which all-zero bytes are a valid value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: tx is a valid, writable timex; modes = 0 makes the call read-only.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        warn!(error = %io::Error::last_os_error(), "adjtimex failed, clock state unknown");
        return ClockSync {
            synchronized: false,
            source: "unavailable".into(),
            max_error_us: 0,
        };
    }
    clock_from_timex(state, tx.status, tx.maxerror)
}

/// Interprets adjtimex's return value, `status` bits and `maxerror` (microseconds).
pub fn clock_from_timex(state: i32, status: i32, maxerror: i64) -> ClockSync {
    ClockSync {
        synchronized: state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0,
        source: "adjtimex".into(),
        max_error_us: maxerror,
    }
}

/// SELinux mode: `enforcing`/`permissive` from selinuxfs' `enforce`, `disabled` when
/// selinuxfs is mounted without it or the config says so, `absent` otherwise.
pub fn read_selinux(selinuxfs: &Path, config: &Path) -> String {
    match read_attr(&selinuxfs.join("enforce")).as_deref() {
        Some("1") => return "enforcing".into(),
        Some("0") => return "permissive".into(),
        _ => {}
    }
    if selinuxfs.is_dir() {
        return "disabled".into();
    }
    if let Ok(text) = read_text(config) {
        if text
            .lines()
            .any(|l| l.trim().eq_ignore_ascii_case("SELINUX=disabled"))
        {
            return "disabled".into();
        }
    }
    "absent".into()
}

/// Whole seconds since boot from /proc/uptime text.
pub fn parse_uptime(text: &str) -> Result<u64, String> {
    let first = text
        .split_whitespace()
        .next()
        .ok_or_else(|| "empty uptime".to_string())?;
    let secs: f64 = first
        .parse()
        .map_err(|_| format!("bad uptime value {first:?}"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad uptime value {first:?}"));
    }
    // Truncation to whole seconds is intended.
    Ok(secs as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Device ids as a stat of each mount point would give them: the top mount's device.
    fn select(text: &str, devs: &[(&str, u64)]) -> Vec<String> {
        let table = parse_mountinfo(text);
        let dev_of = |me: &MountEntry| {
            devs.iter()
                .find(|(p, _)| *p == me.mount_point)
                .map(|(_, d)| *d)
        };
        df_select(&table, dev_of)
            .into_iter()
            .map(|me| format!("{} {}", me.source, me.mount_point))
            .collect()
    }

    #[test]
    fn df_selection_follows_df_rules() {
        let text = "\
22 27 0:21 / /proc rw - proc proc rw
27 1 254:0 / / rw - ext4 /dev/vda rw
25 24 0:23 / /dev/shm rw - tmpfs tmpfs rw
24 27 0:6 / /dev rw - devtmpfs devtmpfs rw
26 24 0:24 / /dev/pts rw - devpts devpts rw
30 25 0:27 / /dev/shm rw - tmpfs tmpfs rw
40 27 8:1 / /mnt/very/long/data rw - xfs /dev/sdb1 rw
41 27 8:1 /sub /srv/x rw - xfs /dev/sdb1 rw
42 27 8:1 / /data rw - xfs /dev/sdb1 rw
50 27 0:40 / /var/lib/thing rw - tmpfs thing rw
51 27 0:40 / /v rw - tmpfs /dev/mapper/x rw
60 27 0:45 / /gone rw - ext4 /dev/sdc rw
";
        let devs = [
            ("/proc", 21),
            ("/", 1),
            ("/dev/shm", 27), // over-mounted: stat sees the top mount for both entries
            ("/dev", 6),
            ("/dev/pts", 24),
            ("/mnt/very/long/data", 801),
            ("/srv/x", 801),
            ("/data", 801),
            ("/var/lib/thing", 40),
            ("/v", 40),
            // "/gone" cannot be stat'ed
        ];
        assert_eq!(
            select(text, &devs),
            [
                "/dev/vda /",
                "tmpfs /dev/shm",
                "devtmpfs /dev",
                // nearer the root wins, a bind of a subdirectory does not, first place kept
                "/dev/sdb1 /data",
                // a device path beats a name
                "/dev/mapper/x /v",
            ]
        );
    }

    #[test]
    fn over_mount_by_another_source_wins() {
        let text = "\
30 1 8:1 / /srv rw - ext4 /dev/sda1 rw
31 1 8:2 / /srv rw - ext4 /dev/sda2 rw
";
        assert_eq!(select(text, &[("/srv", 802)]), ["/dev/sda2 /srv"]);
    }
}
