//! Controller.RunAgentBenchmark: forwards the request to the agent and streams its progress and
//! result back. The agent checks every field (it knows its host); the controller only needs
//! the durations to give the call a deadline long enough for the run. When the person cancels,
//! tonic drops this stream, which drops the call to the agent, which stops the benchmark and
//! removes its test file.

use std::time::Duration;

use preflight_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::{Request, Status};

use crate::agents::agent_status;
use crate::error::InvalidRequest;
use crate::svc::ApiSvc;

/// Benchmark events streamed through from the agent.
pub type EventStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::BenchmarkEvent, Status>> + Send>>;

/// Slack beyond the measured time and warm-up: start-up, result and network.
const SLACK: Duration = Duration::from_secs(60);

/// Slowest layout rate allowed for before the deadline hits: 20 MiB/s.
const LAYOUT_BYTES_PER_S: u64 = 20 << 20;

/// Longest deadline ever given: 10 minutes of run and warm-up (the agent's cap), 64 GiB of
/// layout at the slowest rate, and the slack.
const MAX_DEADLINE: Duration = Duration::from_secs(600 + (64 << 30) / LAYOUT_BYTES_PER_S + 60);

/// How long the agent may take for `req`: its run and warm-up, laying out its test file at a
/// slow disk's pace, and slack. Values over the agent's caps are refused by the agent, so the
/// deadline is simply capped here.
fn deadline(req: &pb::BenchmarkRequest) -> Duration {
    use pb::benchmark_request::Kind;
    let (run_ms, layout_bytes) = match &req.kind {
        Some(Kind::Disk(d)) => (d.time_ms.saturating_add(d.warmup_ms), d.size_bytes),
        Some(Kind::Cpu(c)) => (c.time_ms.saturating_add(c.warmup_ms), 0),
        Some(Kind::Memory(m)) => (m.time_ms.saturating_add(m.warmup_ms), 0),
        None => (0, 0),
    };
    let d = Duration::from_millis(run_ms)
        .saturating_add(Duration::from_secs(layout_bytes / LAYOUT_BYTES_PER_S))
        .saturating_add(SLACK);
    d.min(MAX_DEADLINE)
}

/// A checked `AgentBenchmarkRequest`: an agent and a benchmark of one kind (its fields are
/// the agent's to check: it knows its host).
pub(crate) struct BenchAsk {
    agent_id: String,
    bench: pb::BenchmarkRequest,
}

impl TryFrom<pb::AgentBenchmarkRequest> for BenchAsk {
    type Error = InvalidRequest;
    fn try_from(r: pb::AgentBenchmarkRequest) -> Result<Self, InvalidRequest> {
        if r.agent_id.is_empty() {
            return Err(InvalidRequest::new(
                "agent_id",
                "empty: `preflight agents` lists them",
            ));
        }
        preflight_pki::validate_agent_id(&r.agent_id)
            .map_err(|e| InvalidRequest::new("agent_id", e))?;
        let bench = r.request.ok_or_else(|| {
            InvalidRequest::new("request", "missing: name a disk, cpu or memory benchmark")
        })?;
        if bench.kind.is_none() {
            return Err(InvalidRequest::new(
                "request.kind",
                "missing: name a disk, cpu or memory benchmark",
            ));
        }
        Ok(BenchAsk {
            agent_id: r.agent_id,
            bench,
        })
    }
}

pub async fn run_agent_benchmark(
    svc: &ApiSvc,
    req: Request<pb::AgentBenchmarkRequest>,
    by: &str,
) -> Result<EventStream, Status> {
    let BenchAsk {
        agent_id: id,
        bench,
    } = req.into_inner().try_into()?;
    let rec = svc.agent_record(&id)?;
    let mut client = svc.0.agents.client(&rec)?;
    let mut call = Request::new(bench);
    let timeout = deadline(call.get_ref());
    call.set_timeout(timeout);
    tracing::info!(agent = %id, timeout_s = timeout.as_secs(), %by, "benchmark requested");
    let stream = client
        .run_benchmark(call)
        .await
        .map_err(|s| agent_status(&id, s))?
        .into_inner();
    Ok(Box::pin(
        stream.map(move |ev| ev.map_err(|s| agent_status(&id, s))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_covers_run_warmup_and_layout_and_is_capped() {
        let disk = |time_ms, warmup_ms, size_bytes| pb::BenchmarkRequest {
            kind: Some(pb::benchmark_request::Kind::Disk(pb::DiskBenchmark {
                time_ms,
                warmup_ms,
                size_bytes,
                ..Default::default()
            })),
        };
        let d = deadline(&disk(2000, 1000, 64 << 20));
        assert!(d > Duration::from_secs(3) + SLACK, "{d:?}");
        let big = deadline(&disk(600_000, 0, 64 << 30));
        assert!(big >= Duration::from_secs(600 + 3276), "{big:?}");
        assert_eq!(deadline(&disk(u64::MAX, u64::MAX, u64::MAX)), MAX_DEADLINE);
    }

    #[test]
    fn a_benchmark_request_names_its_agent_and_one_kind() {
        let cpu = || pb::BenchmarkRequest {
            kind: Some(pb::benchmark_request::Kind::Cpu(Default::default())),
        };
        let ok = BenchAsk::try_from(pb::AgentBenchmarkRequest {
            agent_id: "db-1".into(),
            request: Some(cpu()),
        })
        .unwrap();
        assert_eq!(ok.agent_id, "db-1");
        for (r, field) in [
            (
                pb::AgentBenchmarkRequest {
                    agent_id: String::new(),
                    request: Some(cpu()),
                },
                "agent_id",
            ),
            (
                pb::AgentBenchmarkRequest {
                    agent_id: "a/b".into(),
                    request: Some(cpu()),
                },
                "agent_id",
            ),
            (
                pb::AgentBenchmarkRequest {
                    agent_id: "db-1".into(),
                    request: None,
                },
                "request",
            ),
            (
                pb::AgentBenchmarkRequest {
                    agent_id: "db-1".into(),
                    request: Some(pb::BenchmarkRequest { kind: None }),
                },
                "request.kind",
            ),
        ] {
            let e = BenchAsk::try_from(r).err().unwrap();
            assert_eq!(e.field, field, "{e}");
            assert!(Status::from(e).message().starts_with(&format!("{field}: ")));
        }
    }
}
