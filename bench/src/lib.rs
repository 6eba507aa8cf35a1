//! ferry's benchmark tools, driven by `bench/run`: reproducible datasets ([`dataset`]), the
//! replica check ([`verify`]), the listing-diff benchmark ([`diff`]) and the queue's fleet
//! simulation ([`fleet`]).

pub mod dataset;
pub mod diff;
pub mod fleet;
pub mod pattern;
pub mod verify;

/// This process's peak resident set (`VmHWM`), in KiB, when `/proc` tells.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
