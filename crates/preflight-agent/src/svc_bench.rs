//! Agent.RunBenchmark (in progress).

use std::pin::Pin;

use preflight_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Status};

/// The stream of progress events and the final result.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::BenchmarkEvent, Status>> + Send>>;

/// Benchmark state shared by all requests (e.g. the host-wide disk benchmark lock).
#[derive(Default)]
pub struct BenchState {}

pub async fn run_benchmark(
    _st: &BenchState,
    _req: Request<pb::BenchmarkRequest>,
) -> Result<EventStream, Status> {
    Err(Status::unimplemented("benchmarks are not wired yet"))
}
