//! Units, in one place: byte sizes (binary MiB/GiB for memory, decimal GB where vendors and the
//! commonly quoted figures use them), context lengths ("4K" = 4096 positions), and the parsing of
//! both from what users type.

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Bytes in MiB (2^20), as a float for printing.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Bytes in GiB (2^30), as a float for printing.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB as f64
}

/// Parses a byte size: "512MiB", "1.5GiB", "24GB", "1048576". Binary units (KiB, MiB, GiB, TiB,
/// and K, M, G, T alone) are powers of 1024; decimal ones (kB, MB, GB, TB) powers of 1000.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512MiB, 24GiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024f64.powi(2),
        "gib" | "g" => 1024f64.powi(3),
        "tib" | "t" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "'{s}': unknown unit '{other}' (use KiB, MiB, GiB, GB, ...)"
            ))
        }
    };
    Ok((v * mult) as u64)
}

/// Parses a context length: "4096", "4K", "128k" (K = 1024 positions).
pub fn parse_ctx(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1024),
        None => (t, 1),
    };
    match num.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => Err(format!(
            "'{s}' is not a context length (e.g. 4096, 4K, 128K)"
        )),
    }
}

/// A context length as people write it: "4K" for multiples of 1024, else the number.
pub fn ctx_label(ctx: usize) -> String {
    if ctx.is_multiple_of(1024) {
        format!("{}K", ctx / 1024)
    } else {
        ctx.to_string()
    }
}

/// A count with thousands separators: 27432406640 → "27,432,406,640".
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("24GB"), Ok(24_000_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert_eq!(mib(3 << 20), 3.0);
        assert_eq!(gib(3 << 29), 1.5);
    }

    #[test]
    fn contexts_and_counts() {
        assert_eq!(parse_ctx("128K"), Ok(131_072));
        assert_eq!(parse_ctx("4096"), Ok(4096));
        assert!(parse_ctx("0").is_err() && parse_ctx("4M").is_err());
        assert_eq!(ctx_label(131_072), "128K");
        assert_eq!(ctx_label(68_015), "68015");
        assert_eq!(group_digits(27_432_406_640), "27,432,406,640");
        assert_eq!(group_digits(999), "999");
    }
}
