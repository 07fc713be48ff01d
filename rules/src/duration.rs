//! Durations as rule authors write them: `30s`, `5m`, `1h`, `1d`, `1h30m`, `500ms`.

/// Parses a duration such as `1h30m` into milliseconds.
///
/// Units: `ms`, `s`, `m`, `h`, `d`, `w`. Parts must be in descending unit order is not
/// required, but each part needs a unit and a positive whole number.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. \"5m\" or \"1h\"".into());
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("`{text}` is not a duration; write e.g. \"5m\" or \"1h30m\""));
        }
        let n: i64 = s[start..i].parse().map_err(|_| format!("`{text}`: number too large"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "" => return Err(format!("`{text}`: a number needs a unit (ms, s, m, h, d, w)")),
            other => return Err(format!("`{text}`: unknown unit `{other}` (ms, s, m, h, d, w)")),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{text}`: duration too large"))?;
    }
    Ok(total)
}

/// Formats milliseconds the way rule authors write them (`1h`, `5m`, `1h30m`, `250ms`).
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, name) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")] {
        if rest >= unit {
            out.push_str(&format!("{}{}", rest / unit, name));
            rest %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_duration_ms(86_400_000), "1d");
        assert!(parse_duration_ms("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration_ms("5y").unwrap_err().contains("unknown unit `y`"));
        assert!(parse_duration_ms("h").is_err());
    }
}
