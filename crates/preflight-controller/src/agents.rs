//! Connections from the controller to agents: mutual TLS with the controller's identity,
//! verifying each agent by the name its certificate must carry, one cached channel per agent.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use preflight_pki::Identity;
use preflight_proto::v1 as pb;
use preflight_store::AgentRecord;
use tonic::transport::Channel;
use tonic::Status;

pub(crate) struct AgentPool {
    tls: rustls::ClientConfig,
    channels: Mutex<HashMap<String, (String, Channel)>>,
}

/// Where an agent is reached: its listen address, or the address its heartbeats came from
/// when it listens on every interface.
pub(crate) fn dial_addr(rec: &AgentRecord) -> Option<String> {
    let listen: SocketAddr = rec.listen_addr.parse().ok()?;
    if listen.ip().is_unspecified() {
        let ip: IpAddr = rec.observed_ip.parse().ok()?;
        Some(SocketAddr::new(ip, listen.port()).to_string())
    } else {
        Some(listen.to_string())
    }
}

/// The enrolled, unrevoked agent serving plan server `host` (its address `address`, when
/// known), or why there is none. One rule for sweeps, hardening and evidence, so a server is
/// never swept on one machine and hardened on another:
/// 1. the agent whose id is `host`;
/// 2. else the one the controller dials at `address` (its certificate then proves which agent
///    answers), else the one reporting `address` among its interfaces — in both cases exactly
///    one, since private addresses repeat across sites and interface lists are the agent's word;
/// 3. else the one agent reporting `host` as its hostname.
///
/// More than one candidate at a step is an error naming them, never a guess.
pub(crate) fn agent_for_host<'a>(
    host: &str,
    address: Option<IpAddr>,
    agents: &'a [AgentRecord],
) -> Result<&'a AgentRecord, String> {
    let live: Vec<&AgentRecord> = agents.iter().filter(|a| !a.revoked).collect();
    if let Some(a) = live.iter().find(|a| a.id == host) {
        return Ok(a);
    }
    let one = |found: Vec<&'a AgentRecord>,
               what: &str|
     -> Result<Option<&'a AgentRecord>, String> {
        match found.as_slice() {
            [] => Ok(None),
            [a] => Ok(Some(a)),
            many => Err(format!(
                "{host}: agents {} all {what}; enroll the server's agent with `--name {host}` so its id is the plan's name",
                many.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    };
    if let Some(ip) = host.parse::<IpAddr>().ok().or(address) {
        let dialled = live
            .iter()
            .copied()
            .filter(|a| {
                dial_addr(a)
                    .and_then(|d| d.parse::<SocketAddr>().ok())
                    .is_some_and(|d| d.ip() == ip)
            })
            .collect();
        if let Some(a) = one(dialled, &format!("are reached at {ip}"))? {
            return Ok(a);
        }
        let holding = live
            .iter()
            .copied()
            .filter(|a| {
                a.addresses
                    .iter()
                    .any(|c| c.split('/').next().and_then(|s| s.parse::<IpAddr>().ok()) == Some(ip))
            })
            .collect();
        if let Some(a) = one(holding, &format!("report the address {ip}"))? {
            return Ok(a);
        }
    }
    let named = live
        .iter()
        .copied()
        .filter(|a| a.hostname.eq_ignore_ascii_case(host))
        .collect();
    one(named, "report this hostname")?
        .ok_or_else(|| format!("{host}: no enrolled agent has this id, address or hostname"))
}

/// TLS for every connection the controller opens to an agent (the pool's channels and the
/// fresh connection that confirms a firewall change): the agent is verified against the CA and
/// by name, and must serve the certificate the store records for it (`registry::check_cert`:
/// the current one, or the one a renewal replaced while its overlap lasts), so an old
/// certificate and key copied elsewhere cannot pass for the agent.
pub(crate) fn checked_agent_tls(
    ca_pem: &str,
    identity: &Identity,
    store: preflight_store::Store,
    clock: std::sync::Arc<dyn crate::Clock>,
) -> Result<rustls::ClientConfig, preflight_pki::PkiError> {
    let check: preflight_pki::ServerCheck = std::sync::Arc::new(move |name, fp| {
        let rustls::pki_types::ServerName::DnsName(dns) = name else {
            return Err("an agent is verified by its DNS name".into());
        };
        let Some(id) = dns.as_ref().strip_suffix(preflight_pki::AGENT_SUFFIX) else {
            return Err(format!("{} is not an agent name", dns.as_ref()));
        };
        let rec = store
            .agent(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("agent {id} is not enrolled here"))?;
        match check_cert(&rec, fp, clock.now_ms()) {
            CertCheck::Refused => Err(format!(
                "agent {id} serves certificate {fp}, which is not its current one: refused"
            )),
            _ => Ok(()),
        }
    });
    preflight_pki::client_config_checked(ca_pem, identity, check)
}

impl AgentPool {
    /// Agents are verified against the CA and by name, and must serve the certificate the
    /// store records for them (`registry::check_cert`: the current one, or the one a renewal
    /// replaced while its overlap lasts), so an old certificate and key copied elsewhere
    /// cannot pass for the agent.
    pub fn new(
        ca_pem: &str,
        identity: &Identity,
        store: preflight_store::Store,
        clock: std::sync::Arc<dyn crate::Clock>,
    ) -> Result<Self, preflight_pki::PkiError> {
        Ok(Self {
            tls: checked_agent_tls(ca_pem, identity, store, clock)?,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// A client for the agent of `rec`.
    pub fn client(
        &self,
        rec: &AgentRecord,
    ) -> Result<pb::agent_client::AgentClient<Channel>, Status> {
        if rec.revoked {
            return Err(Status::failed_precondition(format!(
                "agent {} is revoked: enroll the host again with a new join token",
                rec.id
            )));
        }
        let addr = dial_addr(rec).ok_or_else(|| {
            Status::unavailable(format!(
                "agent {} has not reported where it listens yet (no heartbeat)",
                rec.id
            ))
        })?;
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let ch = match map.get(&rec.id) {
            Some((a, ch)) if *a == addr => ch.clone(),
            _ => {
                let name = preflight_pki::agent_server_name(&rec.id)
                    .map_err(|e| Status::internal(e.to_string()))?;
                let ch = preflight_pki::transport::connect_lazy(
                    &addr,
                    self.tls.clone(),
                    name,
                    Duration::from_secs(5),
                )
                .map_err(|e| Status::unavailable(e.to_string()))?;
                map.insert(rec.id.clone(), (addr, ch.clone()));
                ch
            }
        };
        Ok(pb::agent_client::AgentClient::new(ch)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES))
    }

    /// Forgets the channel of an agent (revoked, or its address changed).
    pub fn forget(&self, id: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// Maps a failed call to an agent to a status for the person who asked, naming the agent.
pub(crate) fn agent_status(id: &str, s: Status) -> Status {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            Status::unavailable(format!("agent {id} is unreachable: {}", s.message()))
        }
        tonic::Code::DeadlineExceeded => {
            Status::deadline_exceeded(format!("agent {id} did not answer in time"))
        }
        _ => Status::new(s.code(), format!("agent {id}: {}", s.message())),
    }
}

/// Which certificates `rec` accepts, judged at `now` for the certificate `fp`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CertCheck {
    /// The current one.
    Current,
    /// The current one, used for the first time since a renewal: the previous one is retired.
    CurrentFirstUse,
    /// The one replaced by a renewal that is still in its overlap.
    Previous,
    /// The record has no fingerprint (never stored): accept this one and record it.
    Unrecorded,
    Refused,
}

pub(crate) fn check_cert(rec: &AgentRecord, fp: &str, now: i64) -> CertCheck {
    if rec.cert_sha256.is_empty() {
        return CertCheck::Unrecorded;
    }
    if rec.cert_sha256 == fp {
        return if rec.prev_cert_sha256.is_empty() {
            CertCheck::Current
        } else {
            CertCheck::CurrentFirstUse
        };
    }
    if !rec.prev_cert_sha256.is_empty()
        && rec.prev_cert_sha256 == fp
        && now < rec.prev_cert_until_ms
    {
        return CertCheck::Previous;
    }
    CertCheck::Refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cur: &str, prev: &str, until: i64) -> AgentRecord {
        AgentRecord {
            id: "a".into(),
            cert_sha256: cur.into(),
            prev_cert_sha256: prev.into(),
            prev_cert_until_ms: until,
            ..Default::default()
        }
    }

    #[test]
    fn only_the_recorded_certificate_is_accepted_with_a_bounded_renewal_overlap() {
        assert_eq!(
            check_cert(&rec("new", "", 0), "new", 10),
            CertCheck::Current
        );
        assert_eq!(
            check_cert(&rec("new", "", 0), "old", 10),
            CertCheck::Refused
        );
        // During a renewal: the new one's first use retires the old one; the old one is
        // accepted only until the deadline.
        let r = rec("new", "old", 100);
        assert_eq!(check_cert(&r, "new", 10), CertCheck::CurrentFirstUse);
        assert_eq!(check_cert(&r, "old", 99), CertCheck::Previous);
        assert_eq!(check_cert(&r, "old", 100), CertCheck::Refused);
        assert_eq!(check_cert(&r, "other", 10), CertCheck::Refused);
        // A record without a fingerprint takes the first one presented.
        assert_eq!(check_cert(&rec("", "", 0), "x", 10), CertCheck::Unrecorded);
        // An empty presented fingerprint never matches an empty previous one.
        assert_eq!(check_cert(&rec("new", "", 0), "", 10), CertCheck::Refused);
    }
    use preflight_pki::{CertificateAuthority, ReloadableCert};
    use preflight_store::{JoinTokenRecord, Store};

    fn agent_identity(ca: &CertificateAuthority, id: &str) -> Identity {
        let (csr, key_pem) = preflight_pki::make_csr(id).expect("CSR");
        let cert_pem = ca
            .sign_agent_csr(&csr, id, Duration::from_secs(86400))
            .expect("issue");
        Identity { cert_pem, key_pem }
    }

    /// A real TLS handshake in memory: the client config against an agent server presenting
    /// `served`; `Err` carries the client's refusal.
    fn handshake(
        client: rustls::ClientConfig,
        ca_pem: &str,
        served: &Identity,
        id: &str,
    ) -> Result<(), String> {
        let server_cfg = preflight_pki::agent_server_config(
            ca_pem,
            ReloadableCert::new(served).expect("server cert"),
        )
        .expect("server config");
        let name = preflight_pki::agent_server_name(id).expect("name");
        let mut c = rustls::ClientConnection::new(std::sync::Arc::new(client), name)
            .expect("client connection");
        let mut s = rustls::ServerConnection::new(std::sync::Arc::new(server_cfg))
            .expect("server connection");
        for _ in 0..20 {
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).expect("client write");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).expect("server read");
            }
            s.process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).expect("server write");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).expect("client read");
            }
            c.process_new_packets().map_err(|e| e.to_string())?;
        }
        Err("the handshake did not finish".into())
    }

    /// Issue 20 item 4: the configuration every controller-to-agent connection uses (the pool
    /// and, since this change, the fresh firewall-confirmation connection in `hardening_svc`)
    /// refuses an agent serving a CA-signed certificate for its name that is not the one on
    /// record (an old copy), and accepts the current one.
    #[test]
    fn agent_tls_refuses_a_certificate_not_on_record() {
        preflight_pki::install_crypto_provider();
        let ca = CertificateAuthority::generate("test CA").expect("CA");
        let controller = ca
            .issue_controller(&[], Duration::from_secs(86400))
            .expect("controller identity");
        let old = agent_identity(&ca, "web-01");
        let current = agent_identity(&ca, "web-01");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db")).expect("store");
        store
            .add_join_token(&JoinTokenRecord {
                token_sha256: "t".into(),
                created_at_ms: 0,
                expires_at_ms: i64::MAX,
                created_by: "admin".into(),
                used_by: None,
                used_at_ms: None,
                max_uses: 1,
                uses: vec![],
            })
            .expect("token");
        store
            .enroll(
                "t",
                1,
                &AgentRecord {
                    id: "web-01".into(),
                    hostname: "web-01".into(),
                    cert_sha256: current.fingerprint().expect("fp"),
                    ..Default::default()
                },
            )
            .expect("enroll");
        let clock: std::sync::Arc<dyn crate::Clock> = std::sync::Arc::new(crate::SystemClock);
        let tls = checked_agent_tls(ca.cert_pem(), &controller, store, clock).expect("tls");

        let e = handshake(tls.clone(), ca.cert_pem(), &old, "web-01")
            .expect_err("the old certificate must be refused");
        let old_fp = old.fingerprint().expect("fp");
        assert!(
            e.contains("not its current one") && e.contains(&old_fp),
            "{e}"
        );
        handshake(tls.clone(), ca.cert_pem(), &current, "web-01")
            .expect("the certificate on record is accepted");
        // The plain CA-only configuration the confirmation used before accepts the old copy:
        // the check is what refuses it.
        let plain = preflight_pki::client_config(ca.cert_pem(), Some(&controller)).expect("plain");
        handshake(plain, ca.cert_pem(), &old, "web-01").expect("CA-only accepts the old copy");
    }
}
