//! Every controller RPC (Registry, Controller, Readiness, Hardening, Workflow; the first byte
//! picks it) sent as raw bytes to a real controller running in this process over a temporary
//! data directory, through TLS on 127.0.0.1, with the admin token: the server's own prost
//! decoding, authorisation and handler validation all run. No agent is enrolled (a join token
//! cannot be guessed), so the controller never dials out.
//!
//! Property: no panic anywhere in the process (libFuzzer's panic hook aborts), every call
//! answers within 20 s, and no answer is UNKNOWN, or INTERNAL other than the gRPC-mandated
//! INTERNAL for bytes that are not a protobuf message.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut};
use libfuzzer_sys::fuzz_target;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// (service, method) of every RPC a client can reach on the controller's listener.
const METHODS: &[(&str, &str)] = &[
    ("Registry", "Enroll"),
    ("Registry", "Heartbeat"),
    ("Registry", "Renew"),
    ("Controller", "WhoAmI"),
    ("Controller", "CreateJoinToken"),
    ("Controller", "ListAgents"),
    ("Controller", "RevokeAgent"),
    ("Controller", "GetAgentInventory"),
    ("Controller", "RunAgentBenchmark"),
    ("Controller", "ListAgentPorts"),
    ("Controller", "Probe"),
    ("Controller", "Bandwidth"),
    ("Controller", "BandwidthLive"),
    ("Controller", "GetStatus"),
    ("Readiness", "RunSweep"),
    ("Readiness", "ListSweeps"),
    ("Readiness", "GetSweep"),
    ("Readiness", "AttachSweep"),
    ("Readiness", "CancelSweep"),
    ("Hardening", "Harden"),
    ("Hardening", "FirewallAllow"),
    ("Hardening", "ExportEvidence"),
    ("Hardening", "Status"),
    ("Workflow", "Execute"),
    ("Workflow", "GetBatch"),
    ("Workflow", "ListBatches"),
    ("Workflow", "GetQueue"),
    ("Workflow", "ListProjects"),
    ("Workflow", "PauseStats"),
    ("Workflow", "AddUser"),
    ("Workflow", "ListUsers"),
    ("Workflow", "DevClock"),
    ("Workflow", "DevRecord"),
];

/// Passes bytes through unchanged in both directions.
#[derive(Clone, Copy, Default)]
struct Raw;
impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}
impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}
impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

struct World {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    token: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        preflight_pki::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let init = preflight_controller::init(&data, &[]).unwrap();
        let (channel, running) = rt.block_on(async {
            let mut cfg = preflight_controller::ServeConfig::new(&data);
            cfg.listen = "127.0.0.1:0".parse().unwrap();
            cfg.dev_clock = true;
            let running =
                preflight_controller::start(cfg, Arc::new(preflight_controller::SystemClock))
                    .await
                    .unwrap();
            let (tls, _) = preflight_pki::pinned_client_config(&init.ca_pin).unwrap();
            let ch = preflight_pki::transport::connect(
                &running.local_addr.to_string(),
                tls,
                preflight_pki::controller_server_name(),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
            (ch, running)
        });
        // The server task lives as long as the process.
        std::mem::forget(running);
        World {
            rt,
            channel,
            token: format!("Bearer {}", init.admin_token).parse().unwrap(),
            _dir: dir,
        }
    })
}

async fn call(w: &World, path: String, body: Vec<u8>) -> Result<usize, Status> {
    let mut g = tonic::client::Grpc::new(w.channel.clone());
    g.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(body);
    req.metadata_mut().insert("authorization", w.token.clone());
    let path = PathAndQuery::try_from(path).unwrap();
    let mut stream = g.server_streaming(req, path, Raw).await?.into_inner();
    let mut n = 0;
    while let Some(_m) = stream.message().await? {
        n += 1;
    }
    Ok(n)
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, body)) = data.split_first() else {
        return;
    };
    let (svc, method) = METHODS[usize::from(k) % METHODS.len()];
    let w = world();
    let path = format!("/preflight.v1.{svc}/{method}");
    let r = w.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), call(w, path, body.to_vec())).await
    });
    let r = r.unwrap_or_else(|_| panic!("{svc}.{method} did not answer within 20 s"));
    if let Err(s) = r {
        let decode = s.message().contains("failed to decode Protobuf message");
        assert!(
            s.code() != Code::Unknown && (s.code() != Code::Internal || decode),
            "{svc}.{method}: {:?}: {}",
            s.code(),
            s.message()
        );
    }
});
