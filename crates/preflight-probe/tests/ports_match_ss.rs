//! Acceptance: listening sockets equal what `ss -ltnup` / `ss -lunp` show (set of proto,
//! address, port, pid), through netlink and through the /proc/net fallback. The test opens its
//! own TCP and UDP listeners on 127.0.0.x and ::1 and closes them when it ends.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

use anyhow::{bail, Context, Result};
use preflight_probe::ports::{
    list_listening, list_listening_netlink, list_listening_procfs, parse_proc_net, Family,
    ListOptions, Listener, Proto,
};

#[path = "support/ss.rs"]
mod ss_view;

use ss_view::{ss_all, Key};

/// Our view in ss's terms: the pid we report must be the lowest of ss's pids.
fn ours(list: &[Listener]) -> BTreeMap<Key, Option<u32>> {
    list.iter()
        .map(|l| ((l.proto.as_str().to_string(), l.address, l.port), l.pid))
        .collect()
}

/// The test's own sockets, closed on drop.
struct OwnSockets {
    _tcp: Vec<TcpListener>,
    _udp: Vec<UdpSocket>,
    keys: Vec<Key>,
}

fn open_own_sockets() -> Result<OwnSockets> {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut keys = Vec::new();
    for addr in ["127.0.0.2:0", "127.0.0.3:0", "[::1]:0"] {
        let addr: SocketAddr = addr.parse()?;
        let l = TcpListener::bind(addr).with_context(|| format!("binding tcp {addr}"))?;
        let local = l.local_addr()?;
        keys.push(("tcp".to_string(), local.ip(), local.port()));
        tcp.push(l);
    }
    for addr in ["127.0.0.4:0", "[::1]:0"] {
        let addr: SocketAddr = addr.parse()?;
        let s = UdpSocket::bind(addr).with_context(|| format!("binding udp {addr}"))?;
        let local = s.local_addr()?;
        keys.push(("udp".to_string(), local.ip(), local.port()));
        udp.push(s);
    }
    // A connected UDP socket is not listening: neither ss -l nor we show it.
    let connected = UdpSocket::bind("127.0.0.5:0")?;
    connected.connect("127.0.0.4:9")?;
    udp.push(connected);
    Ok(OwnSockets {
        _tcp: tcp,
        _udp: udp,
        keys,
    })
}

/// Checks one listing against two ss readings taken around it: every socket both readings show
/// must be listed with the lowest pid ss shows, and everything listed must appear in one of
/// them. Other tests open and close sockets meanwhile, so a mismatch is retried.
fn check_against_ss(list_fn: impl Fn() -> Result<Vec<Listener>>, with_pids: bool) -> Result<()> {
    let own = open_own_sockets()?;
    let me = std::process::id();
    let mut last_error = String::new();
    for attempt in 1..=5 {
        let before = ss_all()?;
        let list = list_fn()?;
        let after = ss_all()?;
        let got = ours(&list);

        // Our own sockets: exact.
        for key in &own.keys {
            let pid = got
                .get(key)
                .with_context(|| format!("own socket {key:?} missing from {got:?}"))?;
            if with_pids {
                assert_eq!(*pid, Some(me), "pid of own socket {key:?}");
            } else {
                assert_eq!(*pid, None, "pid asked not to be resolved for {key:?}");
            }
            let s = before.get(key).context("ss does not show our own socket")?;
            assert!(
                s.contains(&me),
                "ss shows pids {s:?} for own socket {key:?}"
            );
        }
        assert!(
            !got.keys().any(
                |(p, a, _)| p == "udp" && *a == "127.0.0.5".parse::<IpAddr>().expect("literal")
            ),
            "a connected UDP socket was listed as listening"
        );

        let mut problems = Vec::new();
        for (key, pids) in &before {
            if after.get(key) != Some(pids) {
                continue; // changed while we looked
            }
            match got.get(key) {
                None => problems.push(format!("{key:?} shown by ss is missing")),
                Some(pid) if with_pids && *pid != pids.iter().next().copied() => {
                    problems.push(format!("{key:?}: pid {pid:?}, ss shows {pids:?}"))
                }
                Some(_) => {}
            }
        }
        for key in got.keys() {
            if !before.contains_key(key) && !after.contains_key(key) {
                problems.push(format!("{key:?} listed but ss never showed it"));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        last_error = problems.join("; ");
        eprintln!("attempt {attempt}: {last_error}");
    }
    bail!("listing differs from ss: {last_error}")
}

#[test]
fn netlink_listing_matches_ss_with_processes() -> Result<()> {
    check_against_ss(
        || Ok(list_listening_netlink(&ListOptions::default())?),
        true,
    )
}

#[test]
fn default_listing_matches_ss_without_processes() -> Result<()> {
    check_against_ss(
        || {
            Ok(list_listening(&ListOptions {
                processes: false,
                ..ListOptions::default()
            })?)
        },
        false,
    )
}

#[test]
fn procfs_fallback_matches_ss_with_processes() -> Result<()> {
    check_against_ss(|| Ok(list_listening_procfs(&ListOptions::default())?), true)
}

#[test]
fn protocol_selection_is_respected() -> Result<()> {
    let own = open_own_sockets()?;
    let tcp = list_listening(&ListOptions {
        tcp: true,
        udp: false,
        processes: false,
    })?;
    assert!(tcp.iter().all(|l| l.proto == Proto::Tcp));
    assert!(tcp
        .iter()
        .any(|l| (l.proto.as_str().to_string(), l.address, l.port) == own.keys[0]));
    let udp = list_listening_procfs(&ListOptions {
        tcp: false,
        udp: true,
        processes: false,
    })?;
    assert!(udp.iter().all(|l| l.proto == Proto::Udp));
    assert!(udp
        .iter()
        .any(|l| (l.proto.as_str().to_string(), l.address, l.port) == own.keys[3]));
    let none = list_listening(&ListOptions {
        tcp: false,
        udp: false,
        processes: true,
    });
    assert!(none.is_err());
    Ok(())
}

#[test]
fn process_name_and_user_are_resolved() -> Result<()> {
    let own = open_own_sockets()?;
    let list = list_listening(&ListOptions::default())?;
    let comm = std::fs::read_to_string("/proc/self/comm")?;
    let uid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(uid)?
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let mine = list
        .iter()
        .find(|l| (l.proto.as_str().to_string(), l.address, l.port) == own.keys[0])
        .context("own listener missing")?;
    assert_eq!(mine.process.as_deref(), Some(comm.trim_end()));
    assert_eq!(mine.user.as_deref(), Some(user.as_str()));
    assert!(mine.inode > 0);
    assert_eq!(mine.family, Family::V4);
    Ok(())
}

// Sample tables as a little-endian kernel prints them.
#[cfg(target_endian = "little")]
#[test]
fn proc_net_parser_on_samples() -> Result<()> {
    let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1527 1 00000000a2a30130 100 0 0 10 0
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2001 1 0000000000000000 100 0 0 10 0
   2: 0100007F:A1B2 0100007F:07E8 01 00000000:00000000 00:00000000 00000000  1000        0 98765 1 0000000000000000 20 4 30 10 -1
";
    let got = parse_proc_net(tcp, Proto::Tcp, Family::V4).map_err(anyhow::Error::msg)?;
    let keys: Vec<(IpAddr, u16, u64)> = got.iter().map(|l| (l.address, l.port, l.inode)).collect();
    assert_eq!(
        keys,
        [
            ("0.0.0.0".parse()?, 2024, 1527),
            ("127.0.0.1".parse()?, 3306, 2001),
        ]
    );

    let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3002 1 0000000000000000 100 0 0 10 0
   2: 000080FE00000000FF005450B6AD1DFE:0222 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3003 1 0000000000000000 100 0 0 10 0
";
    let got = parse_proc_net(tcp6, Proto::Tcp, Family::V6).map_err(anyhow::Error::msg)?;
    let addrs: Vec<(IpAddr, u16)> = got.iter().map(|l| (l.address, l.port)).collect();
    assert_eq!(
        addrs,
        [
            ("::1".parse()?, 22),
            ("::ffff:127.0.0.1".parse()?, 8080),
            ("fe80::5054:ff:fe1d:adb6".parse()?, 546),
        ]
    );
    assert!(got
        .iter()
        .all(|l| l.family == Family::V6 && l.proto == Proto::Tcp));

    let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  120: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 4001 2 0000000000000000 0
  300: 0500007F:B0C1 0400007F:0009 01 00000000:00000000 00:00000000 00000000     0        0 4002 2 0000000000000000 0
";
    let got = parse_proc_net(udp, Proto::Udp, Family::V4).map_err(anyhow::Error::msg)?;
    let keys: Vec<(IpAddr, u16, u64)> = got.iter().map(|l| (l.address, l.port, l.inode)).collect();
    assert_eq!(keys, [("127.0.0.53".parse()?, 53, 4001)]);

    // Malformed input is refused with the line named.
    let bad = "header\n   0: 0100007F:XYZ0 00000000:0000 0A 0:0 0:0 0 0 0 1\n";
    let err = parse_proc_net(bad, Proto::Tcp, Family::V4).expect_err("bad port");
    assert!(err.contains("line 2"), "{err}");
    let short = "header\n   0: 0100007F:0050 00000000:0000 0A\n";
    assert!(parse_proc_net(short, Proto::Tcp, Family::V4).is_err());
    let bad_addr = "header\n   0: 0100007:0050 00000000:0000 0A 0:0 0:0 0 0 0 1\n";
    assert!(parse_proc_net(bad_addr, Proto::Tcp, Family::V4).is_err());
    Ok(())
}
