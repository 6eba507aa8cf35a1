//! Human-friendly units used in the config file: byte sizes and durations.

use std::fmt;
use std::time::Duration;

/// A number of bytes, parsed from strings such as `"100MiB"`, `"5 GB"` or `"4096"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// One mebibyte.
    pub const MIB: u64 = 1024 * 1024;
    /// One gibibyte.
    pub const GIB: u64 = 1024 * Self::MIB;

    /// Parses a size: digits, optional spaces, optional unit (B, KB, KiB, MB, MiB, GB, GiB,
    /// TB, TiB; case-insensitive). Decimal units are powers of 1000, binary ones of 1024.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        if number.is_empty() {
            return Err(format!("{text:?} is not a size (expected e.g. \"100MiB\")"));
        }
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1000,
            "kib" => 1024,
            "mb" | "m" => 1000 * 1000,
            "mib" => Self::MIB,
            "gb" | "g" => 1000 * 1000 * 1000,
            "gib" => Self::GIB,
            "tb" | "t" => 1000 * 1000 * 1000 * 1000,
            "tib" => 1024 * Self::GIB,
            other => {
                return Err(format!(
                    "{text:?} has unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size (expected e.g. \"100MiB\")"))?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(format!("{text:?} is too large"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= Self::GIB && b.is_multiple_of(Self::GIB) {
            write!(f, "{}GiB", b / Self::GIB)
        } else if b >= Self::MIB && b.is_multiple_of(Self::MIB) {
            write!(f, "{}MiB", b / Self::MIB)
        } else {
            write!(f, "{b}B")
        }
    }
}

/// Parses a duration such as `"15m"`, `"30s"` or `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration (expected e.g. \"15m\" or \"30s\"): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_both_unit_systems() {
        assert_eq!(ByteSize::parse("100MiB"), Ok(ByteSize(100 * 1024 * 1024)));
        assert_eq!(ByteSize::parse("5 GB"), Ok(ByteSize(5_000_000_000)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("1.5KiB"), Ok(ByteSize(1536)));
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("10 parsecs").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_duration("soon").is_err());
    }
}
