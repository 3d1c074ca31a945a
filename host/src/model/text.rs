//! The small text forms every front end accepts the same way: sizes (`64K`, `128M`)
//! and `KEY=VALUE` pairs. Flags, the admin API's query strings, manifests and the CLI
//! all parse through here, so one spelling works everywhere; sizes are also written
//! back for people here (`17.6 MiB`).

use anyhow::{Context as _, bail};

/// Parses `KEY=VALUE` (the value may be empty and may contain `=`; the key is trimmed
/// and must not be empty).
pub fn parse_key_value(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => bail!("invalid variable `{text}`: expected KEY=VALUE"),
    }
}

/// Parses `4096`, `64K`, `128M`, `1G` (powers of 1024; a trailing `B` or `iB` is allowed).
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .with_context(|| format!("invalid size `{text}` (examples: 4096, 64K, 128M, 1G)"))?;
    n.checked_mul(1 << shift)
        .with_context(|| format!("size `{text}` is too large"))
}

/// Writes `bytes` for a person: `512 B`, `4.0 KiB`, `17.6 MiB`, `1.2 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_parse_as_key_value() {
        assert_eq!(
            parse_key_value("GREETING=hi").unwrap(),
            ("GREETING".into(), "hi".into())
        );
        assert_eq!(
            parse_key_value("URL=a=b").unwrap(),
            ("URL".into(), "a=b".into())
        );
        assert_eq!(
            parse_key_value("EMPTY=").unwrap(),
            ("EMPTY".into(), String::new())
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 64 * 1024);
        assert_eq!(parse_size("128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn sizes_are_written_for_people() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(18_454_000), "17.6 MiB");
        assert_eq!(format_size(3 << 30), "3.0 GiB");
        assert_eq!(format_size(u64::MAX), "16777216.0 TiB");
    }
}
