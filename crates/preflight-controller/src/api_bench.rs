//! Controller.RunAgentBenchmark (in progress).

use preflight_proto::v1 as pb;
use tonic::{Request, Status};

use crate::api::ApiSvc;

/// Benchmark events streamed through from the agent.
pub type EventStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::BenchmarkEvent, Status>> + Send>>;

pub async fn run_agent_benchmark(
    _svc: &ApiSvc,
    _req: Request<pb::AgentBenchmarkRequest>,
) -> Result<EventStream, Status> {
    Err(Status::unimplemented("benchmarks are not wired yet"))
}
