//! The agent as a library: the binary (`main.rs`) is a thin command-line shell over it,
//! and the fuzz targets (`fuzz/`) reach the request validation through [`fuzzing`].

// Every `print!`/`println!`/`eprint!`/`eprintln!` of this crate goes through
// `preflight_render::term`: control characters from hosts are escaped in text output (JSON is
// written exactly), and a reader that went away (`| head`) ends the process quietly.
#[allow(unused_macros)]
macro_rules! print {
    ($($t:tt)*) => { ::preflight_render::term::out(format_args!($($t)*), false) };
}
#[allow(unused_macros)]
macro_rules! println {
    () => { ::preflight_render::term::out(format_args!(""), true) };
    ($($t:tt)*) => { ::preflight_render::term::out(format_args!($($t)*), true) };
}
#[allow(unused_macros)]
macro_rules! eprint {
    ($($t:tt)*) => { ::preflight_render::term::err(format_args!($($t)*), false) };
}
#[allow(unused_macros)]
macro_rules! eprintln {
    () => { ::preflight_render::term::err(format_args!(""), true) };
    ($($t:tt)*) => { ::preflight_render::term::err(format_args!($($t)*), true) };
}

pub mod cmd_bench;
pub mod cmd_harden;
pub mod cmd_package;
pub mod cmd_ports;
pub mod convert;
pub mod enroll;
pub mod fuzzing;
pub mod run;
pub mod service;
pub mod state;
pub mod svc_bench;
pub mod svc_harden;
pub mod svc_net;
pub mod svc_package;

use clap::ValueEnum;

/// This agent's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Output format of local subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub use preflight_core::error_chain;

/// A Unix time for people.
pub fn fmt_unix(s: i64) -> String {
    preflight_core::timefmt::utc(s)
}

/// This host's addresses outside loopback, in CIDR notation.
pub fn host_addresses() -> Vec<String> {
    let mut out = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for ifa in addrs {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (ip, prefix): (std::net::IpAddr, u32) =
            if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                (a.ip().into(), m.ip().to_bits().count_ones())
            } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                (a.ip().into(), m.ip().to_bits().count_ones())
            } else {
                continue;
            };
        if !ip.is_loopback() && out.len() < 64 {
            out.push(format!("{ip}/{prefix}"));
        }
    }
    out
}
