//! Sizes as users type them: `512`, `64k`, `10G`, `1.5T`, `2MiB` (powers of 1024, as qemu-img).

use crate::error::{Error, Result};

/// Parses a size with an optional suffix: `b`/none (bytes), `k`, `M`, `G`, `T`, `P`, `E`
/// (powers of 1024, either case, optionally followed by `iB` or `B`). A fractional number is
/// accepted with a suffix (`1.5G`) when the result is a whole number of bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(format!(
            "invalid size '{text}': expected a number of bytes with an optional suffix k, M, G, T, P or E (e.g. 512, 64k, 10G)"
        ))
    };
    let t = text.trim();
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits_end);
    if number.is_empty() || number.starts_with('.') {
        return Err(bad());
    }
    let suffix = suffix
        .strip_suffix("iB")
        .or_else(|| suffix.strip_suffix("ib"))
        .or_else(|| {
            if suffix.len() == 2 {
                suffix.strip_suffix('B')
            } else {
                None
            }
        })
        .unwrap_or(suffix);
    let shift = suffix_shift(suffix).ok_or_else(bad)?;
    let unit: u128 = 1u128 << shift;
    let bytes: u128 = match number.split_once('.') {
        None => number.parse::<u128>().map_err(|_| bad())? * unit,
        Some((whole, frac)) => {
            if frac.is_empty() || frac.contains('.') || frac.len() > 18 {
                return Err(bad());
            }
            let whole: u128 = whole.parse().map_err(|_| bad())?;
            let scale = 10u128.pow(frac.len() as u32);
            let frac: u128 = frac.parse().map_err(|_| bad())?;
            let frac_bytes = frac * unit;
            if !frac_bytes.is_multiple_of(scale) {
                return Err(Error::invalid(format!(
                    "invalid size '{text}': not a whole number of bytes"
                )));
            }
            whole * unit + frac_bytes / scale
        }
    };
    u64::try_from(bytes).map_err(|_| Error::invalid(format!("size '{text}' is too large")))
}

/// Parses a number of bytes by qemu-img's rules (its `cvtnum`), for option `what` (`rate
/// limit`, `granularity`): bytes, or a number with one suffix `b`, `k`, `M`, `G`, `T`, `P`,
/// `E` (powers of 1024, either case; a fraction only with a suffix other than `b`), at most
/// `i64::MAX`. The messages are qemu-img's (`Invalid granularity specified: 'abc'.`), which
/// scripts may match.
pub fn cvtnum(what: &str, text: &str) -> Result<u64> {
    let invalid = || Error::invalid(format!("Invalid {what} specified: '{text}'."));
    let range = || {
        Error::invalid(format!(
            "Invalid {what} specified. Must be between 0 and {}.",
            i64::MAX
        ))
    };
    let t = text.trim_start();
    if let Some(magnitude) = t.strip_prefix('-') {
        // qemu reads the number first and finds it out of range before the suffix.
        return if magnitude.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
            Err(range())
        } else {
            Err(invalid())
        };
    }
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(end);
    let shift = suffix_shift(suffix).ok_or_else(invalid)?;
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) if !f.contains('.') => (w, Some(f)),
        Some(_) => return Err(invalid()),
        None => (number, None),
    };
    if whole.is_empty() && fraction.is_none_or(str::is_empty) {
        return Err(invalid());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| range())?
    };
    let fraction: f64 = match fraction {
        None | Some("") => 0.0,
        Some(f) => format!("0.{f}").parse().map_err(|_| invalid())?,
    };
    // As qemu_strtosz: a fraction of a byte is refused, a fraction of a unit truncated.
    if shift == 0 && fraction != 0.0 {
        return Err(invalid());
    }
    let unit = 1u128 << shift;
    let bytes = whole
        .checked_mul(unit)
        .map(|b| b + (fraction * unit as f64) as u128)
        .ok_or_else(range)?;
    match u64::try_from(bytes) {
        Ok(n) if n <= i64::MAX as u64 => Ok(n),
        _ => Err(range()),
    }
}

/// The power of two a size suffix stands for: none or `b` bytes, `k`, `M`, `G`, `T`, `P`,
/// `E` (either case) 10 to 60; `None` for anything else.
pub fn suffix_shift(suffix: &str) -> Option<u32> {
    Some(match suffix {
        "" | "b" | "B" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => return None,
    })
}

/// Formats a byte count as qemu-img does in human output: `10 GiB`, `1.5 MiB`, `512 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    // Three significant digits, trailing zeros dropped, like qemu's size_to_str.
    let text = if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_and_fractions() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("2MB").unwrap(), 2 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("1.1").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999E").is_err());
    }

    #[test]
    fn human_sizes_look_like_qemu() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1 << 40), "1 TiB");
        assert_eq!(human_size(24 << 20), "24 MiB");
        assert_eq!(human_size(1_572_864), "1.5 MiB");
        assert_eq!(human_size(67_125_248), "64 MiB");
    }
}
