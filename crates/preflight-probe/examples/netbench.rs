//! Drives the network probes from the command line, for bench/network.sh:
//!
//! ```text
//! netbench receive --bind ADDR:PORT --token HEX64 [--streams N] [--max-duration S] [--ttl S] [--reverse]
//! netbench send    --to ADDR:PORT   --token HEX64 [--streams N] [--duration S] [--write-size BYTES] [--reverse]
//! netbench scan    --ip ADDR [--ports 1-65535] [--timeout-ms MS] [--concurrency N]
//! ```
//!
//! `receive` and `send` print their JSON report on stdout; `scan` prints one JSON object with the
//! open ports and the elapsed time. Every subcommand appends `"cpu_s"` (user + system CPU
//! seconds of this process) to its output so the script can compare CPU per byte.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use preflight_probe::bandwidth::{
    self, BandwidthReceiver, Direction, ReceiverOptions, SendOptions,
};
use preflight_probe::netprobe::{raise_nofile_limit, scan_ports, ScanState};

/// Minimal `--flag value` / `--switch` parser: enough for a bench driver.
struct Args(Vec<String>);

impl Args {
    fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
    fn req(&self, name: &str) -> Result<&str> {
        self.value(name).with_context(|| format!("missing {name}"))
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name} {v}: {e}")),
        }
    }
    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

fn token(args: &Args) -> Result<[u8; 32]> {
    let bytes = hex::decode(args.req("--token")?).context("--token must be 64 hex digits")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("--token must be 64 hex digits (32 bytes)"))
}

fn direction(args: &Args) -> Direction {
    if args.flag("--reverse") {
        Direction::Reverse
    } else {
        Direction::Forward
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: rusage is plain integers; getrusage fills it for RUSAGE_SELF and cannot fail with
    // these arguments.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn print_with_cpu(mut v: serde_json::Value) -> Result<()> {
    if let Some(o) = v.as_object_mut() {
        o.insert("cpu_s".into(), serde_json::json!(cpu_seconds()));
    }
    println!("{}", serde_json::to_string(&v)?);
    Ok(())
}

fn parse_ports(spec: &str) -> Result<Vec<u16>> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u16, u16) = (a.parse()?, b.parse()?);
        if a == 0 || a > b {
            bail!("bad port range {part}: use 1-65535, low to high");
        }
        out.extend(a..=b);
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        bail!("usage: netbench receive|send|scan ... (see the source header)");
    };
    let args = Args(argv);
    match cmd.as_str() {
        "receive" => {
            let bind: SocketAddr = args.req("--bind")?.parse().context("--bind ADDR:PORT")?;
            let opts = ReceiverOptions {
                ttl: Duration::from_secs(args.num("--ttl", 60)?),
                expected_streams: args.num("--streams", 1)?,
                max_duration: Duration::from_secs(args.num("--max-duration", 60)?),
                direction: direction(&args),
            };
            let rx = BandwidthReceiver::start(bind, token(&args)?, opts).await?;
            eprintln!("listening {}", rx.local_addr());
            let report = rx.wait().await?;
            print_with_cpu(serde_json::to_value(report)?)
        }
        "send" => {
            let to: SocketAddr = args.req("--to")?.parse().context("--to ADDR:PORT")?;
            let opts = SendOptions {
                streams: args.num("--streams", 1)?,
                duration: Duration::from_secs_f64(args.num("--duration", 10.0)?),
                write_size: args.num("--write-size", bandwidth::DEFAULT_WRITE_SIZE)?,
                direction: direction(&args),
            };
            // The receiver may still be starting: retry the connect for a few seconds.
            let deadline = Instant::now() + Duration::from_secs(5);
            let report = loop {
                match bandwidth::send(to, token(&args)?, &opts).await {
                    Err(bandwidth::BandwidthError::Connect { .. }) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    r => break r?,
                }
            };
            print_with_cpu(serde_json::to_value(report)?)
        }
        "scan" => {
            let ip: IpAddr = args.req("--ip")?.parse().context("--ip ADDR")?;
            let ports = parse_ports(args.value("--ports").unwrap_or("1-65535"))?;
            let limit = raise_nofile_limit()?;
            let wanted: usize = args.num("--concurrency", 4096)?;
            let concurrency = wanted.min(limit.saturating_sub(64).max(1) as usize);
            let timeout = Duration::from_millis(args.num("--timeout-ms", 500)?);
            let t = Instant::now();
            let results = scan_ports(ip, &ports, timeout, concurrency).await?;
            let elapsed = t.elapsed().as_secs_f64();
            let count = |s: ScanState| results.iter().filter(|r| r.state == s).count();
            let open: Vec<u16> = results
                .iter()
                .filter(|r| r.state == ScanState::Open)
                .map(|r| r.port)
                .collect();
            print_with_cpu(serde_json::json!({
                "elapsed_s": elapsed,
                "ports": ports.len(),
                "concurrency": concurrency,
                "open": open,
                "closed": count(ScanState::Closed),
                "filtered": count(ScanState::Filtered),
                "unreachable": count(ScanState::Unreachable),
                "error": count(ScanState::Error),
            }))
        }
        other => bail!("unknown subcommand {other}: use receive, send or scan"),
    }
}
