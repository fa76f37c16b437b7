//! Agent.RunBenchmark: validates the request, runs the blocking benchmark of
//! `preflight_probe::bench` on the blocking pool, streams its progress and then one result.
//! When the caller goes away (the controller cancels the RPC or drops the stream), the
//! benchmark's cancel flag is set, so it stops and removes its test file.
//!
//! The local `preflight-agent bench` goes through the same [`validate`] and [`run`], so the two
//! paths refuse and report alike.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use preflight_probe::bench::cpu::{run_cpu, CpuParams, CpuReport, CpuSpec};
use preflight_probe::bench::disk::{
    run_disk, DiskLimits, DiskParams, DiskReport, DiskSpec, DiskTarget, Engine, IoStats, RwMode,
};
use preflight_probe::bench::memory::{
    run_memory, MemoryOper, MemoryParams, MemoryReport, MemorySpec,
};
use preflight_probe::bench::{BenchError, LatencySummary, Phase, Progress, Unit, MAX_DURATION};
use preflight_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Status};

/// The stream of progress events and the final result.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::BenchmarkEvent, Status>> + Send>>;

/// Benchmark state shared by all requests. Two disk benchmarks are kept apart host-wide by the
/// library's lock file; CPU and memory runs are kept to one at a time here, so two callers
/// cannot each take half the memory or every CPU.
pub struct BenchState {
    /// Caps and the lock file of disk benchmarks.
    pub disk_limits: DiskLimits,
    compute_busy: Arc<AtomicBool>,
}

impl Default for BenchState {
    fn default() -> Self {
        Self {
            disk_limits: DiskLimits::default(),
            compute_busy: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Who asks: the local command may name an existing file and a relative directory; a remote
/// caller names an absolute directory and only ever gets a temporary file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// `preflight-agent bench` on this host.
    Local,
    /// The controller, on behalf of a person.
    Remote,
}

/// A request whose every field has been checked.
#[derive(Debug)]
pub enum Validated {
    /// Disk benchmark.
    Disk(DiskParams),
    /// CPU benchmark.
    Cpu(CpuParams),
    /// Memory benchmark.
    Memory(MemoryParams),
}

fn invalid(name: &'static str, value: impl ToString, reason: impl Into<String>) -> BenchError {
    BenchError::InvalidParam {
        name,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Checks a duration field against the 600 s cap, naming the field.
fn duration_field(name: &'static str, ms: u64) -> Result<Duration, BenchError> {
    let d = Duration::from_millis(ms);
    if d > MAX_DURATION {
        return Err(invalid(
            name,
            format!("{} s", ms.div_ceil(1000)),
            format!("is over the cap of {} s", MAX_DURATION.as_secs()),
        ));
    }
    Ok(d)
}

fn u8_field(name: &'static str, v: u32, max: u8) -> Result<u8, BenchError> {
    u8::try_from(v)
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| invalid(name, v, format!("must be 0 to {max}")))
}

/// Turns a wire request into checked benchmark parameters; every error names the field and
/// what is accepted. Host checks (free space, filesystem, the lock) happen when the run starts.
pub fn validate(
    req: pb::BenchmarkRequest,
    caller: Caller,
    limits: &DiskLimits,
) -> Result<Validated, BenchError> {
    use pb::benchmark_request::Kind;
    match req.kind {
        None => Err(invalid(
            "kind",
            "none",
            "name one benchmark: disk, cpu or memory",
        )),
        Some(Kind::Disk(d)) => {
            let target = if !d.filename.is_empty() {
                if caller == Caller::Remote {
                    return Err(invalid(
                        "filename",
                        &d.filename,
                        "an existing file may only be named with the local `preflight-agent \
                         bench`; name a directory instead",
                    ));
                }
                if !d.directory.is_empty() {
                    return Err(invalid(
                        "filename",
                        &d.filename,
                        "give either a directory or --filename, not both",
                    ));
                }
                DiskTarget::ExistingFile(PathBuf::from(&d.filename))
            } else {
                if d.directory.is_empty() {
                    return Err(invalid(
                        "directory",
                        "",
                        "name the directory on the disk to measure",
                    ));
                }
                let dir = PathBuf::from(&d.directory);
                if caller == Caller::Remote && !dir.is_absolute() {
                    return Err(invalid(
                        "directory",
                        &d.directory,
                        "must be an absolute path, e.g. /var/lib/data",
                    ));
                }
                DiskTarget::TempFileIn(dir)
            };
            if d.size_bytes > limits.max_size {
                return Err(invalid(
                    "size",
                    d.size_bytes,
                    format!(
                        "is over the cap of {} bytes ({}): choose a smaller --size",
                        limits.max_size,
                        preflight_render::bytes(limits.max_size)
                    ),
                ));
            }
            let time = duration_field("time", d.time_ms)?;
            let warmup = duration_field("warmup", d.warmup_ms)?;
            let spec = DiskSpec {
                rw: rw_mode(d.rw)?,
                bs: d.bs_bytes,
                iodepth: d.iodepth,
                size: d.size_bytes,
                time,
                warmup,
                direct: d.direct,
                time_based: d.time_based,
                fdatasync: d.fdatasync,
                rwmixread: u8_field("rwmixread", d.rwmixread, 100)?,
                ..DiskSpec::new(target)
            };
            Ok(Validated::Disk(spec.validate()?))
        }
        Some(Kind::Cpu(c)) => Ok(Validated::Cpu(
            CpuSpec {
                threads: c.threads,
                cpu_max_prime: c.cpu_max_prime,
                time: duration_field("time", c.time_ms)?,
                warmup: duration_field("warmup", c.warmup_ms)?,
            }
            .validate()?,
        )),
        Some(Kind::Memory(m)) => Ok(Validated::Memory(
            MemorySpec {
                threads: m.threads,
                block_size: m.block_size_bytes,
                total_size: m.total_size_bytes,
                oper: memory_oper(m.oper)?,
                time: duration_field("time", m.time_ms)?,
                warmup: duration_field("warmup", m.warmup_ms)?,
            }
            .validate()?,
        )),
    }
}

/// Runs a checked benchmark on the calling thread (blocking) and converts its report.
pub fn run(
    v: &Validated,
    limits: &DiskLimits,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<pb::BenchmarkResult, BenchError> {
    use pb::benchmark_result::Kind;
    let kind = match v {
        Validated::Disk(p) => Kind::Disk(disk_result(run_disk(p, limits, progress, cancel)?)),
        Validated::Cpu(p) => Kind::Cpu(cpu_result(run_cpu(p, progress, cancel)?)),
        Validated::Memory(p) => Kind::Memory(memory_result(run_memory(p, progress, cancel)?)),
    };
    Ok(pb::BenchmarkResult { kind: Some(kind) })
}

/// The one place a benchmark error becomes a status: bad input is INVALID_ARGUMENT, the host's
/// state FAILED_PRECONDITION, a busy or too small host RESOURCE_EXHAUSTED; the library's
/// message is kept.
pub fn bench_status(e: BenchError) -> Status {
    let msg = e.to_string();
    match e {
        BenchError::InvalidParam { .. } | BenchError::DurationOverCap { .. } => {
            Status::invalid_argument(msg)
        }
        BenchError::NotADirectory { .. }
        | BenchError::ReadOnlyFilesystem { .. }
        | BenchError::DirectIoUnsupported { .. }
        | BenchError::BadTestFile { .. } => Status::failed_precondition(msg),
        BenchError::InsufficientSpace { .. }
        | BenchError::SizeOverCap { .. }
        | BenchError::MemoryOverCap { .. }
        | BenchError::Busy { .. } => Status::resource_exhausted(msg),
        BenchError::Cancelled => Status::cancelled(msg),
        BenchError::Io { .. } => Status::internal(msg),
    }
}

/// Progress as sent on the wire.
pub fn progress_event(p: Progress) -> pb::BenchmarkProgress {
    pb::BenchmarkProgress {
        phase: match p.phase {
            Phase::Layout => pb::BenchPhase::Layout,
            Phase::Warmup => pb::BenchPhase::Warmup,
            Phase::Run => pb::BenchPhase::Run,
        } as i32,
        fraction: p.fraction,
        current: p.current,
        unit: unit_pb(p.unit) as i32,
    }
}

/// A benchmark's unit on the wire.
pub fn unit_pb(u: Unit) -> pb::BenchUnit {
    match u {
        Unit::Iops => pb::BenchUnit::Iops,
        Unit::MibPerS => pb::BenchUnit::MibPerS,
        Unit::EventsPerS => pb::BenchUnit::EventsPerS,
    }
}

fn latency(l: &LatencySummary) -> pb::BenchLatency {
    pb::BenchLatency {
        samples: l.samples,
        min_us: l.min_us,
        mean_us: l.mean_us,
        p50_us: l.p50_us,
        p95_us: l.p95_us,
        p99_us: l.p99_us,
        max_us: l.max_us,
    }
}

fn io_stats(s: &IoStats) -> pb::DiskIoStats {
    pb::DiskIoStats {
        ios: s.ios,
        bytes: s.bytes,
        iops: s.iops,
        mib_per_s: s.mib_per_s,
        latency: Some(latency(&s.latency)),
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// How the I/O reached the disk, on the wire.
fn io_mode_pb(buffered: bool) -> pb::DiskIoMode {
    if buffered {
        pb::DiskIoMode::Buffered
    } else {
        pb::DiskIoMode::Direct
    }
}

/// The I/O pattern asked for; unset or a value this agent does not know is refused.
fn rw_mode(v: i32) -> Result<RwMode, BenchError> {
    match pb::DiskRw::try_from(v) {
        Ok(pb::DiskRw::Randread) => Ok(RwMode::RandRead),
        Ok(pb::DiskRw::Randwrite) => Ok(RwMode::RandWrite),
        Ok(pb::DiskRw::Randrw) => Ok(RwMode::RandRw),
        Ok(pb::DiskRw::Read) => Ok(RwMode::Read),
        Ok(pb::DiskRw::Write) => Ok(RwMode::Write),
        Ok(pb::DiskRw::Unspecified) | Err(_) => Err(invalid(
            "rw",
            v,
            "is not an I/O pattern this agent knows: use randread, randwrite, randrw, read or write",
        )),
    }
}

fn rw_pb(m: RwMode) -> pb::DiskRw {
    match m {
        RwMode::RandRead => pb::DiskRw::Randread,
        RwMode::RandWrite => pb::DiskRw::Randwrite,
        RwMode::RandRw => pb::DiskRw::Randrw,
        RwMode::Read => pb::DiskRw::Read,
        RwMode::Write => pb::DiskRw::Write,
    }
}

/// The memory operation asked for; unset or unknown is refused.
fn memory_oper(v: i32) -> Result<MemoryOper, BenchError> {
    match pb::MemoryOper::try_from(v) {
        Ok(pb::MemoryOper::Read) => Ok(MemoryOper::Read),
        Ok(pb::MemoryOper::Write) => Ok(MemoryOper::Write),
        Ok(pb::MemoryOper::Copy) => Ok(MemoryOper::Copy),
        Ok(pb::MemoryOper::Unspecified) | Err(_) => Err(invalid(
            "memory-oper",
            v,
            "is not an operation this agent knows: use read, write or copy",
        )),
    }
}

fn memory_oper_pb(o: MemoryOper) -> pb::MemoryOper {
    match o {
        MemoryOper::Read => pb::MemoryOper::Read,
        MemoryOper::Write => pb::MemoryOper::Write,
        MemoryOper::Copy => pb::MemoryOper::Copy,
    }
}

/// A disk run's engine on the wire.
fn engine_pb(e: Engine) -> pb::DiskEngine {
    match e {
        Engine::Psync => pb::DiskEngine::Psync,
        Engine::IoUring => pb::DiskEngine::IoUring,
    }
}

fn disk_result(r: DiskReport) -> pb::DiskResult {
    let p = &r.params;
    let (directory, filename) = match &p.target {
        DiskTarget::TempFileIn(d) => (path_str(d), String::new()),
        DiskTarget::ExistingFile(f) => (String::new(), path_str(f)),
    };
    pb::DiskResult {
        params: Some(pb::DiskParamsUsed {
            directory,
            filename,
            rw: rw_pb(p.rw) as i32,
            bs_bytes: p.bs_bytes,
            iodepth: p.iodepth,
            size_bytes: p.size_bytes,
            time_s: p.time_s,
            warmup_s: p.warmup_s,
            direct: p.direct,
            time_based: p.time_based,
            fdatasync: p.fdatasync,
            rwmixread: u32::from(p.rwmixread),
        }),
        io_mode: io_mode_pb(r.buffered) as i32,
        buffered: r.buffered,
        engine: engine_pb(r.engine) as i32,
        filesystem: r.filesystem.clone(),
        file: path_str(&r.file),
        elapsed_s: r.elapsed_s,
        iops: r.iops,
        mib_per_s: r.mib_per_s,
        latency: Some(latency(&r.latency)),
        read: r.read.as_ref().map(io_stats),
        write: r.write.as_ref().map(io_stats),
        fdatasync: r.fdatasync.as_ref().map(latency),
    }
}

fn cpu_result(r: CpuReport) -> pb::CpuResult {
    pb::CpuResult {
        params: Some(pb::CpuParamsUsed {
            threads: r.params.threads,
            cpu_max_prime: r.params.cpu_max_prime,
            time_s: r.params.time_s,
            warmup_s: r.params.warmup_s,
        }),
        events: r.events,
        elapsed_s: r.elapsed_s,
        events_per_s: r.events_per_s,
        per_thread_events: r.per_thread_events.clone(),
        latency: Some(latency(&r.latency)),
    }
}

fn memory_result(r: MemoryReport) -> pb::MemoryResult {
    pb::MemoryResult {
        params: Some(pb::MemoryParamsUsed {
            threads: r.params.threads,
            block_size_bytes: r.params.block_size_bytes,
            total_size_bytes: r.params.total_size_bytes,
            oper: memory_oper_pb(r.params.oper) as i32,
            time_s: r.params.time_s,
            warmup_s: r.params.warmup_s,
        }),
        events: r.events,
        bytes: r.bytes,
        elapsed_s: r.elapsed_s,
        mib_per_s: r.mib_per_s,
        latency: Some(latency(&r.latency)),
    }
}

/// Clears the CPU/memory busy flag when the run ends, however it ends.
struct ComputeSlot(Arc<AtomicBool>);

impl Drop for ComputeSlot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The response stream: sets the cancel flag when tonic drops it, which it does when the caller
/// cancels the RPC or goes away.
struct CancelOnDrop {
    rx: mpsc::Receiver<Result<pb::BenchmarkEvent, Status>>,
    cancel: Arc<AtomicBool>,
}

impl Stream for CancelOnDrop {
    type Item = Result<pb::BenchmarkEvent, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        // Harmless once the run has finished; stops it when it has not.
        self.cancel.store(true, Ordering::Relaxed);
    }
}

fn event(e: pb::benchmark_event::Event) -> pb::BenchmarkEvent {
    pb::BenchmarkEvent { event: Some(e) }
}

pub async fn run_benchmark(
    st: &BenchState,
    req: Request<pb::BenchmarkRequest>,
) -> Result<EventStream, Status> {
    let v = validate(req.into_inner(), Caller::Remote, &st.disk_limits).map_err(bench_status)?;
    let slot = match v {
        Validated::Disk(_) => None,
        Validated::Cpu(_) | Validated::Memory(_) => {
            if st.compute_busy.swap(true, Ordering::AcqRel) {
                return Err(Status::resource_exhausted(
                    "another cpu or memory benchmark is running on this agent: wait for it to \
                     finish",
                ));
            }
            Some(ComputeSlot(st.compute_busy.clone()))
        }
    };
    tracing::info!(benchmark = ?v, "benchmark starting");
    let limits = st.disk_limits.clone();
    let cancel = Arc::new(AtomicBool::new(false));
    // Progress comes ten times a second; a slow reader loses progress events, never the result.
    let (tx, rx) = mpsc::channel(32);
    let flag = cancel.clone();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let progress = |p: Progress| {
            if tx.is_closed() {
                flag.store(true, Ordering::Relaxed);
                return;
            }
            let _ = tx.try_send(Ok(event(pb::benchmark_event::Event::Progress(
                progress_event(p),
            ))));
        };
        let out = match run(&v, &limits, &progress, &flag) {
            Ok(r) => {
                tracing::info!("benchmark finished");
                Ok(event(pb::benchmark_event::Event::Result(r)))
            }
            Err(e) => {
                tracing::info!(error = %e, "benchmark ended without a result");
                Err(bench_status(e))
            }
        };
        let _ = tx.blocking_send(out);
    });
    Ok(Box::pin(CancelOnDrop { rx, cancel }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(f: impl FnOnce(&mut pb::DiskBenchmark)) -> pb::BenchmarkRequest {
        let mut d = pb::DiskBenchmark {
            directory: "/var/tmp".into(),
            rw: pb::DiskRw::Randread as i32,
            bs_bytes: 4096,
            iodepth: 1,
            size_bytes: 64 << 20,
            time_ms: 2000,
            direct: true,
            time_based: true,
            rwmixread: 50,
            ..Default::default()
        };
        f(&mut d);
        pb::BenchmarkRequest {
            kind: Some(pb::benchmark_request::Kind::Disk(d)),
        }
    }

    fn refused(req: pb::BenchmarkRequest) -> Status {
        let e = validate(req, Caller::Remote, &DiskLimits::default()).unwrap_err();
        bench_status(e)
    }

    /// `--output json` of progress and of a disk result keeps the words the string fields had.
    #[test]
    fn result_enums_keep_their_words_in_json() {
        for (phase, word) in [
            (Phase::Layout, "layout"),
            (Phase::Warmup, "warmup"),
            (Phase::Run, "run"),
        ] {
            for (unit, u) in [
                (Unit::Iops, "iops"),
                (Unit::MibPerS, "mib_per_s"),
                (Unit::EventsPerS, "events_per_s"),
            ] {
                let p = progress_event(Progress {
                    phase,
                    fraction: 0.5,
                    current: 1.0,
                    unit,
                });
                let j = serde_json::to_value(p).unwrap();
                assert_eq!(
                    (j["phase"].as_str(), j["unit"].as_str()),
                    (Some(word), Some(u))
                );
            }
        }
        for (buffered, word) in [(false, "direct"), (true, "buffered")] {
            let r = pb::DiskResult {
                io_mode: io_mode_pb(buffered) as i32,
                ..Default::default()
            };
            assert_eq!(serde_json::to_value(&r).unwrap()["io_mode"], word);
        }
        for (e, word) in [(Engine::Psync, "psync"), (Engine::IoUring, "io_uring")] {
            let r = pb::DiskResult {
                engine: engine_pb(e) as i32,
                ..Default::default()
            };
            assert_eq!(serde_json::to_value(&r).unwrap()["engine"], word);
        }
    }

    #[test]
    fn every_bad_field_is_invalid_argument_naming_it() {
        let cases: Vec<(pb::BenchmarkRequest, &str)> = vec![
            (disk(|d| d.directory = "data".into()), "directory"),
            (disk(|d| d.directory = String::new()), "directory"),
            (disk(|d| d.size_bytes = 65 << 30), "size"),
            (disk(|d| d.time_ms = 601_000), "time"),
            (disk(|d| d.warmup_ms = 601_000), "warmup"),
            (disk(|d| d.rw = 99), "rw"),
            (disk(|d| d.rw = pb::DiskRw::Unspecified as i32), "rw"),
            (disk(|d| d.iodepth = 0), "iodepth"),
            (disk(|d| d.iodepth = 100_000), "iodepth"),
            (disk(|d| d.bs_bytes = 1 << 40), "bs"),
            (disk(|d| d.rwmixread = 300), "rwmixread"),
            (disk(|d| d.filename = "/etc/passwd".into()), "filename"),
            (
                pb::BenchmarkRequest {
                    kind: Some(pb::benchmark_request::Kind::Cpu(pb::CpuBenchmark {
                        threads: 100_000,
                        cpu_max_prime: 20_000,
                        time_ms: 1000,
                        warmup_ms: 0,
                    })),
                },
                "threads",
            ),
            (
                pb::BenchmarkRequest {
                    kind: Some(pb::benchmark_request::Kind::Memory(pb::MemoryBenchmark {
                        threads: 1,
                        block_size_bytes: 1 << 20,
                        total_size_bytes: 1 << 30,
                        oper: 99,
                        time_ms: 1000,
                        warmup_ms: 0,
                    })),
                },
                "memory-oper",
            ),
            (pb::BenchmarkRequest { kind: None }, "kind"),
        ];
        for (req, field) in cases {
            let s = refused(req);
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{field}: {s:?}");
            assert!(
                s.message().contains(field),
                "{field} not named: {}",
                s.message()
            );
        }
    }

    #[test]
    fn caps_are_named_in_the_message() {
        let s = refused(disk(|d| d.time_ms = 601_000));
        assert!(s.message().contains("600 s"), "{}", s.message());
        let s = refused(disk(|d| d.size_bytes = 65 << 30));
        assert!(s.message().contains("64.0 GiB"), "{}", s.message());
    }

    #[test]
    fn a_good_request_passes_and_local_callers_may_use_relative_dirs() {
        assert!(matches!(
            validate(disk(|_| {}), Caller::Remote, &DiskLimits::default()),
            Ok(Validated::Disk(_))
        ));
        assert!(validate(
            disk(|d| d.directory = "data".into()),
            Caller::Local,
            &DiskLimits::default()
        )
        .is_ok());
    }
}
