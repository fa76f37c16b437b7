//! Listening sockets and their owning processes, like `ss -ltnup` / `ss -lunp`.
//!
//! Sockets come from netlink sock_diag (the kernel filters by state, so thousands of
//! established connections cost nothing); when netlink is unavailable the text tables in
//! /proc/net are read instead. Owning processes are found the only way Linux offers: by
//! reading the `socket:[INODE]` links under /proc/PID/fd. That scan is the slow part, so it
//! runs only when asked for, once, with a directory fd per process (no path walks), and stops
//! as soon as every socket has an owner.
//!
//! "Listening" means what `ss -l` shows: TCP sockets in LISTEN, and UDP sockets that are bound
//! but not connected (state UNCONN). A socket shared by several processes (a forking server) is
//! reported with its lowest pid, usually the parent.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{debug, warn};

/// Transport protocol of a listener: TCP in state LISTEN, or UDP bound and not connected.
pub use preflight_core::net::Proto;

/// Address family of a listener's socket. An IPv6 socket bound to `::` may also accept IPv4
/// unless it is v6-only; it is still reported as `V6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// AF_INET.
    V4,
    /// AF_INET6.
    V6,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// TCP or UDP.
    pub proto: Proto,
    /// IPv4 or IPv6 socket.
    pub family: Family,
    /// Local address; `0.0.0.0` or `::` for all addresses.
    pub address: IpAddr,
    /// Local port.
    pub port: u16,
    /// Lowest pid holding the socket; None when processes were not asked for or no visible
    /// process holds it (kernel sockets, other pid namespaces).
    pub pid: Option<u32>,
    /// That process's name (`/proc/PID/comm`).
    pub process: Option<String>,
    /// That process's effective user, by name when it has one, else the numeric uid.
    pub user: Option<String>,
    /// Socket inode, the key that links the socket to its processes.
    pub inode: u64,
}

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOptions {
    /// Include TCP listeners.
    pub tcp: bool,
    /// Include UDP sockets.
    pub udp: bool,
    /// Resolve owning processes (the slow part: a scan of /proc/*/fd).
    pub processes: bool,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            tcp: true,
            udp: true,
            processes: true,
        }
    }
}

/// Why listening sockets could not be listed.
#[derive(Debug, Error)]
pub enum PortsError {
    /// Neither TCP nor UDP was selected.
    #[error("nothing to list: select tcp, udp or both")]
    NothingSelected,
    /// The netlink sock_diag socket failed.
    #[error("netlink sock_diag {step} failed: {source}")]
    Netlink {
        /// What was being done: `socket`, `send`, `receive`.
        step: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The kernel answered with an error or a malformed message.
    #[error("netlink sock_diag reply rejected: {detail}")]
    NetlinkReply {
        /// What was wrong.
        detail: String,
    },
    /// The dump took longer than allowed or returned more sockets than allowed.
    #[error("netlink sock_diag dump exceeded its limit: {detail}")]
    NetlinkLimit {
        /// Which limit.
        detail: String,
    },
    /// A /proc/net table could not be read.
    #[error("cannot read {path}: {source}; is /proc mounted?")]
    ProcNetRead {
        /// The table.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A /proc/net table line had an unexpected format.
    #[error("cannot parse {path} line {line}: {detail}")]
    ProcNetParse {
        /// The table.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        detail: String,
    },
}

/// Most sockets one listing returns; a host with more listeners than this is broken.
const MAX_LISTENERS: usize = 1 << 20;
/// Longest a netlink dump may take.
const NETLINK_DEADLINE: Duration = Duration::from_secs(10);
/// Most lines read from one /proc/net table (established sockets are in it too).
const MAX_PROC_NET_LINES: usize = 10_000_000;

/// TCP_LISTEN and TCP_CLOSE from include/net/tcp_states.h.
const TCP_LISTEN: u8 = 10;
const TCP_CLOSE: u8 = 7;

/// Lists listening sockets: netlink sock_diag first, /proc/net when netlink fails. Processes
/// are resolved when `opts.processes` is set. Sorted by proto, port, family, address.
pub fn list_listening(opts: &ListOptions) -> Result<Vec<Listener>, PortsError> {
    if !opts.tcp && !opts.udp {
        return Err(PortsError::NothingSelected);
    }
    let mut listeners = match list_sockets_netlink(opts) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "netlink sock_diag failed, reading /proc/net instead");
            list_sockets_procfs(opts)?
        }
    };
    if opts.processes {
        resolve_processes(&mut listeners);
    }
    sort_listeners(&mut listeners);
    Ok(listeners)
}

/// Like [`list_listening`] but only through /proc/net (the fallback path), so it can be used
/// and tested on its own.
pub fn list_listening_procfs(opts: &ListOptions) -> Result<Vec<Listener>, PortsError> {
    if !opts.tcp && !opts.udp {
        return Err(PortsError::NothingSelected);
    }
    let mut listeners = list_sockets_procfs(opts)?;
    if opts.processes {
        resolve_processes(&mut listeners);
    }
    sort_listeners(&mut listeners);
    Ok(listeners)
}

/// Like [`list_listening`] but only through netlink, with no fallback.
pub fn list_listening_netlink(opts: &ListOptions) -> Result<Vec<Listener>, PortsError> {
    if !opts.tcp && !opts.udp {
        return Err(PortsError::NothingSelected);
    }
    let mut listeners = list_sockets_netlink(opts)?;
    if opts.processes {
        resolve_processes(&mut listeners);
    }
    sort_listeners(&mut listeners);
    Ok(listeners)
}

fn sort_listeners(listeners: &mut [Listener]) {
    listeners.sort_by(|a, b| {
        (a.proto, a.port, a.family, a.address, a.inode)
            .cmp(&(b.proto, b.port, b.family, b.address, b.inode))
    });
}

fn selected(opts: &ListOptions) -> Vec<(Proto, Family)> {
    let mut out = Vec::with_capacity(4);
    for (proto, on) in [(Proto::Tcp, opts.tcp), (Proto::Udp, opts.udp)] {
        if on {
            out.push((proto, Family::V4));
            out.push((proto, Family::V6));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// netlink sock_diag

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// inet_diag_msg: family, state, timer, retrans, sockid (48), expires, rqueue, wqueue, uid,
/// inode.
const INET_DIAG_MSG_LEN: usize = 72;

fn list_sockets_netlink(opts: &ListOptions) -> Result<Vec<Listener>, PortsError> {
    let sock = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )
    .map_err(|source| PortsError::Netlink {
        step: "socket",
        source,
    })?;
    sock.set_read_timeout(Some(NETLINK_DEADLINE))
        .map_err(|source| PortsError::Netlink {
            step: "set timeout",
            source,
        })?;
    let deadline = Instant::now() + NETLINK_DEADLINE;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (seq, (proto, family)) in (1u32..).zip(selected(opts)) {
        let request = build_diag_request(proto, family, seq);
        let sent = sock.send(&request).map_err(|source| PortsError::Netlink {
            step: "send",
            source,
        })?;
        if sent != request.len() {
            return Err(PortsError::NetlinkReply {
                detail: format!("short send of {sent} of {} bytes", request.len()),
            });
        }
        'dump: loop {
            if Instant::now() > deadline {
                return Err(PortsError::NetlinkLimit {
                    detail: format!("no end of dump within {NETLINK_DEADLINE:?}"),
                });
            }
            let n = (&sock)
                .read(&mut buf)
                .map_err(|source| PortsError::Netlink {
                    step: "receive",
                    source,
                })?;
            if n == 0 {
                return Err(PortsError::NetlinkReply {
                    detail: "empty read before the end of the dump".into(),
                });
            }
            match parse_diag_datagram(&buf[..n], seq, proto, &mut out)? {
                DumpProgress::More => {}
                DumpProgress::Done => break 'dump,
            }
            if out.len() > MAX_LISTENERS {
                return Err(PortsError::NetlinkLimit {
                    detail: format!("more than {MAX_LISTENERS} listening sockets"),
                });
            }
        }
    }
    debug!(count = out.len(), "listening sockets from netlink");
    Ok(out)
}

/// An nlmsghdr followed by an inet_diag_req_v2 asking for a dump of one protocol and family,
/// filtered by state in the kernel.
fn build_diag_request(proto: Proto, family: Family, seq: u32) -> Vec<u8> {
    let states: u32 = match proto {
        Proto::Tcp => 1 << TCP_LISTEN,
        Proto::Udp => 1 << TCP_CLOSE,
    };
    let len = NLMSG_HDRLEN + 56;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&u32::try_from(len).unwrap_or(72).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
    let af = match family {
        Family::V4 => libc::AF_INET,
        Family::V6 => libc::AF_INET6,
    };
    let ipproto = match proto {
        Proto::Tcp => libc::IPPROTO_TCP,
        Proto::Udp => libc::IPPROTO_UDP,
    };
    // Both constants are below 256 by definition.
    b.push(af as u8);
    b.push(ipproto as u8);
    b.push(0); // idiag_ext: no extensions
    b.push(0); // pad
    b.extend_from_slice(&states.to_ne_bytes());
    b.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: match any
    b
}

enum DumpProgress {
    More,
    Done,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(w)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

/// Parses one datagram of a sock_diag dump, appending listeners.
fn parse_diag_datagram(
    mut data: &[u8],
    seq: u32,
    proto: Proto,
    out: &mut Vec<Listener>,
) -> Result<DumpProgress, PortsError> {
    while data.len() >= NLMSG_HDRLEN {
        let len = u32_at(data, 0) as usize;
        let kind = u16_at(data, 4);
        let msg_seq = u32_at(data, 8);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(PortsError::NetlinkReply {
                detail: format!("message length {len} out of bounds ({} left)", data.len()),
            });
        }
        let payload = &data[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(DumpProgress::Done),
                NLMSG_ERROR => {
                    let errno = if payload.len() >= 4 {
                        -(u32_at(payload, 0) as i32)
                    } else {
                        0
                    };
                    return Err(PortsError::Netlink {
                        step: "dump",
                        source: io::Error::from_raw_os_error(errno),
                    });
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(l) = parse_inet_diag_msg(payload, proto) {
                        out.push(l);
                    }
                }
                _ => {}
            }
        }
        let aligned = (len + 3) & !3;
        data = &data[aligned.min(data.len())..];
    }
    Ok(DumpProgress::More)
}

fn parse_inet_diag_msg(p: &[u8], proto: Proto) -> Option<Listener> {
    if p.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let family = match i32::from(p[0]) {
        libc::AF_INET => Family::V4,
        libc::AF_INET6 => Family::V6,
        _ => return None,
    };
    // sockid starts at 4: sport (be16), dport (be16), src (16 bytes), dst, if, cookie.
    let port = u16::from_be_bytes([p[4], p[5]]);
    let address = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(p[8], p[9], p[10], p[11])),
        Family::V6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[8..24]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    };
    let inode = u64::from(u32_at(p, 68));
    Some(Listener {
        proto,
        family,
        address,
        port,
        pid: None,
        process: None,
        user: None,
        inode,
    })
}

// ---------------------------------------------------------------------------------------------
// /proc/net fallback

fn proc_net_path(proto: Proto, family: Family) -> &'static str {
    match (proto, family) {
        (Proto::Tcp, Family::V4) => "/proc/net/tcp",
        (Proto::Tcp, Family::V6) => "/proc/net/tcp6",
        (Proto::Udp, Family::V4) => "/proc/net/udp",
        (Proto::Udp, Family::V6) => "/proc/net/udp6",
    }
}

fn list_sockets_procfs(opts: &ListOptions) -> Result<Vec<Listener>, PortsError> {
    let mut out = Vec::new();
    for (proto, family) in selected(opts) {
        let path = Path::new(proc_net_path(proto, family));
        let file = match fs::File::open(path) {
            Ok(f) => f,
            // No IPv6 in this kernel: nothing listens on it.
            Err(e) if e.kind() == io::ErrorKind::NotFound && family == Family::V6 => continue,
            Err(source) => {
                return Err(PortsError::ProcNetRead {
                    path: path.into(),
                    source,
                })
            }
        };
        let reader = BufReader::with_capacity(256 * 1024, file);
        for (idx, line) in reader.lines().enumerate() {
            if idx >= MAX_PROC_NET_LINES || out.len() > MAX_LISTENERS {
                warn!(path = %path.display(), "table truncated at its size limit");
                break;
            }
            let line = line.map_err(|source| PortsError::ProcNetRead {
                path: path.into(),
                source,
            })?;
            if idx == 0 {
                continue; // header
            }
            match parse_proc_net_line(&line, proto, family) {
                Ok(Some(l)) => out.push(l),
                Ok(None) => {}
                Err(detail) => {
                    return Err(PortsError::ProcNetParse {
                        path: path.into(),
                        line: idx + 1,
                        detail,
                    })
                }
            }
        }
    }
    Ok(out)
}

/// Parses the text of a /proc/net/{tcp,tcp6,udp,udp6} table (header line included) and
/// returns its listening sockets: TCP in LISTEN, UDP unconnected. Errors name the bad line.
pub fn parse_proc_net(text: &str, proto: Proto, family: Family) -> Result<Vec<Listener>, String> {
    let mut out = Vec::new();
    for (idx, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(l) = parse_proc_net_line(line, proto, family)
            .map_err(|e| format!("line {}: {e}", idx + 1))?
        {
            out.push(l);
        }
    }
    Ok(out)
}

fn parse_proc_net_line(
    line: &str,
    proto: Proto,
    family: Family,
) -> Result<Option<Listener>, String> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next().ok_or("empty line")?;
    let local = fields.next().ok_or("no local address")?;
    let _remote = fields.next().ok_or("no remote address")?;
    let state = fields.next().ok_or("no state")?;
    let state = u8::from_str_radix(state, 16).map_err(|_| format!("bad state {state:?}"))?;
    let wanted = match proto {
        Proto::Tcp => TCP_LISTEN,
        Proto::Udp => TCP_CLOSE,
    };
    if state != wanted {
        return Ok(None);
    }
    // tx:rx queue, tr:when, retrnsmt, uid, timeout, inode
    let inode = fields.nth(5).ok_or("no inode")?;
    let inode: u64 = inode.parse().map_err(|_| format!("bad inode {inode:?}"))?;
    let (addr_hex, port_hex) = local
        .split_once(':')
        .ok_or_else(|| format!("bad local address {local:?}"))?;
    let port = u16::from_str_radix(port_hex, 16).map_err(|_| format!("bad port {port_hex:?}"))?;
    let address = parse_proc_net_addr(addr_hex, family)
        .ok_or_else(|| format!("bad local address {local:?}"))?;
    Ok(Some(Listener {
        proto,
        family,
        address,
        port,
        pid: None,
        process: None,
        user: None,
        inode,
    }))
}

/// The kernel prints addresses as 32-bit words in host byte order, each as 8 hex digits.
fn parse_proc_net_addr(hex: &str, family: Family) -> Option<IpAddr> {
    let words = match family {
        Family::V4 => 1,
        Family::V6 => 4,
    };
    if hex.len() != words * 8 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 16];
    for w in 0..words {
        let word = u32::from_str_radix(&hex[w * 8..w * 8 + 8], 16).ok()?;
        bytes[w * 4..w * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Some(match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(bytes)),
    })
}

// ---------------------------------------------------------------------------------------------
// processes

/// Fills `pid`, `process` and `user` of each listener from the processes holding its socket.
/// Sockets no visible process holds keep None.
pub fn resolve_processes(listeners: &mut [Listener]) {
    let wanted: HashSet<u64> = listeners
        .iter()
        .map(|l| l.inode)
        .filter(|i| *i != 0)
        .collect();
    if wanted.is_empty() {
        return;
    }
    let owners = find_socket_owners(&wanted);
    let mut users: HashMap<u32, String> = HashMap::new();
    let mut procs: HashMap<u32, (Option<String>, Option<String>)> = HashMap::new();
    for l in listeners.iter_mut() {
        let Some(&pid) = owners.get(&l.inode) else {
            continue;
        };
        let (name, user) = procs
            .entry(pid)
            .or_insert_with(|| process_identity(pid, &mut users))
            .clone();
        l.pid = Some(pid);
        l.process = name;
        l.user = user;
    }
}

/// Name (comm) and effective user of a process; None for what vanished meanwhile.
fn process_identity(
    pid: u32,
    users: &mut HashMap<u32, String>,
) -> (Option<String>, Option<String>) {
    let name = fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string());
    let uid = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
        });
    let user = uid.map(|uid| {
        users
            .entry(uid)
            .or_insert_with(
                || match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
                    Ok(Some(u)) => u.name,
                    _ => uid.to_string(),
                },
            )
            .clone()
    });
    (name, user)
}

/// Maps socket inodes to the lowest pid holding them, scanning /proc/PID/fd in ascending pid
/// order and stopping once every inode is found.
fn find_socket_owners(wanted: &HashSet<u64>) -> HashMap<u64, u32> {
    let mut owners = HashMap::with_capacity(wanted.len());
    let mut pids: Vec<u32> = match fs::read_dir("/proc") {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list /proc, processes not resolved");
            return owners;
        }
    };
    pids.sort_unstable();
    for pid in pids {
        scan_process_fds(pid, wanted, &mut owners);
        if owners.len() == wanted.len() {
            break;
        }
    }
    owners
}

/// Reads every fd link of one process, recording sockets in `wanted` not owned yet.
fn scan_process_fds(pid: u32, wanted: &HashSet<u64>, owners: &mut HashMap<u64, u32>) {
    let Ok(path) = CString::new(format!("/proc/{pid}/fd")) else {
        return;
    };
    // SAFETY: path is a valid NUL-terminated string; the returned DIR is closed below.
    let dir = unsafe { libc::opendir(path.as_ptr()) };
    if dir.is_null() {
        return; // exited, or a kernel thread we may not look into
    }
    // SAFETY: dir is a valid open DIR.
    let dfd = unsafe { libc::dirfd(dir) };
    let mut link = [0u8; 64];
    loop {
        // SAFETY: dir is a valid open DIR; the entry stays valid until the next readdir.
        let ent = unsafe { libc::readdir(dir) };
        if ent.is_null() {
            break;
        }
        // SAFETY: ent is non-null and points to a dirent whose d_name is NUL-terminated.
        let name = unsafe { (*ent).d_name.as_ptr() };
        // SAFETY: name is NUL-terminated within d_name.
        if unsafe { *name } == b'.' as libc::c_char {
            continue;
        }
        // SAFETY: dfd is the directory's fd, name a NUL-terminated relative path, link a
        // writable buffer of the given length; readlinkat never writes more than that.
        let n = unsafe { libc::readlinkat(dfd, name, link.as_mut_ptr().cast(), link.len()) };
        if n <= 0 {
            continue;
        }
        let target = &link[..n as usize];
        if let Some(inode) = socket_inode(target) {
            if wanted.contains(&inode) {
                owners.entry(inode).or_insert(pid);
            }
        }
    }
    // SAFETY: dir came from opendir and is closed exactly once.
    unsafe { libc::closedir(dir) };
}

/// The inode of a `socket:[12345]` fd link.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_inode_parses_only_socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[12a]"), None);
        assert_eq!(socket_inode(b"socket:[99999999999999999999999]"), None);
    }

    #[test]
    fn diag_request_has_the_kernel_layout() {
        let r = build_diag_request(Proto::Udp, Family::V6, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), 72);
        assert_eq!(u16_at(&r, 4), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16_at(&r, 6), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32_at(&r, 8), 7);
        assert_eq!(i32::from(r[16]), libc::AF_INET6);
        assert_eq!(i32::from(r[17]), libc::IPPROTO_UDP);
        assert_eq!(u32_at(&r, 20), 1 << TCP_CLOSE);
    }

    #[test]
    fn diag_datagram_with_error_is_refused() {
        let mut msg = Vec::new();
        msg.extend_from_slice(&20u32.to_ne_bytes());
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&3u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        let mut out = Vec::new();
        let err = parse_diag_datagram(&msg, 3, Proto::Tcp, &mut out);
        assert!(matches!(err, Err(PortsError::Netlink { step: "dump", .. })));
    }

    #[test]
    fn diag_datagram_with_bad_length_is_refused() {
        let mut msg = vec![0u8; 16];
        msg[..4].copy_from_slice(&400u32.to_ne_bytes());
        let mut out = Vec::new();
        assert!(matches!(
            parse_diag_datagram(&msg, 1, Proto::Tcp, &mut out),
            Err(PortsError::NetlinkReply { .. })
        ));
    }
}
