//! Timestamp parsing and the store's canonical text form.
//!
//! The store keeps timestamps as naive UTC ISO 8601 text, exactly as the
//! original `trade_cache.db` does: `2025-10-08T14:26:45` when there is no
//! fraction, `2025-10-12T18:48:05.705000` (six digits) otherwise. Inputs may
//! be ISO 8601 with or without a zone, with `T` or a space, a bare date, or
//! epoch seconds / milliseconds / microseconds (told apart by magnitude).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

/// Parses any accepted timestamp form into UTC microseconds.
pub fn parse(text: &str) -> Result<Micros, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty timestamp".into());
    }
    if let Some(us) = parse_canonical(s) {
        return Ok(us);
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && !s.contains("--")
    {
        if let Ok(n) = s.parse::<f64>() {
            return from_epoch_number(n, s);
        }
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc).timestamp_micros());
    }
    let normalized = s.replacen(' ', "T", 1);
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(&normalized, fmt) {
            return Ok(dt.with_timezone(&Utc).timestamp_micros());
        }
    }
    let naive = normalized.strip_suffix('Z').unwrap_or(&normalized);
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(naive, fmt) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    Err(format!(
        "{s:?} is not a timestamp (expected ISO 8601 such as 2025-10-08T14:26:45Z, or epoch seconds/milliseconds)"
    ))
}

/// Epoch numbers: seconds below 1e11, milliseconds below 1e14, else microseconds.
fn from_epoch_number(n: f64, s: &str) -> Result<Micros, String> {
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?} is not a valid epoch time"));
    }
    let us = if n < 1e11 {
        n * 1e6
    } else if n < 1e14 {
        n * 1e3
    } else {
        n
    };
    // Years past 9999 cannot be written back as ISO text.
    if us >= 253_402_300_800e6 {
        return Err(format!("{s:?} is past the year 9999"));
    }
    Ok(us.round() as i64)
}

/// Fast path for the canonical form `YYYY-MM-DDTHH:MM:SS[.ffffff]`, which is
/// what every row of the store holds; export parses a million of these.
pub fn parse_canonical(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    if !(b.len() == 19 || (b.len() > 20 && b.len() <= 26 && b[19] == b'.')) {
        return None;
    }
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let time = date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    let mut micros = 0u32;
    if b.len() > 19 {
        let digits = b.len() - 20;
        micros = num(20..b.len())? * 10u32.pow(6 - digits as u32);
    }
    Some(time.and_utc().timestamp_micros() + i64::from(micros))
}

/// Canonical store text for a UTC instant (see the module doc).
pub fn format(us: Micros) -> String {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(dt) => {
            let naive = dt.naive_utc();
            if naive.nanosecond() == 0 {
                naive.format("%Y-%m-%dT%H:%M:%S").to_string()
            } else {
                naive.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
            }
        }
        None => String::from("invalid"),
    }
}

/// RFC 3339 text with a `Z`, for manifests and JSON output.
pub fn format_rfc3339(us: Micros) -> String {
    format(us) + "Z"
}

/// Now, in UTC microseconds.
pub fn now() -> Micros {
    Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_round_trip() {
        for s in ["2025-10-08T14:26:45", "2025-10-12T18:48:05.705000"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }

    #[test]
    fn accepted_forms_agree() {
        let want = parse("2025-10-12T18:48:05.705000").unwrap();
        for s in [
            "2025-10-12 18:48:05.705",
            "2025-10-12T18:48:05.705Z",
            "2025-10-12T20:48:05.705+02:00",
            "2025-10-12T18:48:05.705+0000",
            "1760294885.705",
            "1760294885705",
            "1760294885705000",
        ] {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
        assert_eq!(format(parse("2025-10-12").unwrap()), "2025-10-12T00:00:00");
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-02-30T00:00:00",
            "-5",
            "1e400",
            "NaN",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }

        #[test]
        fn format_parse_round_trip(us in 0i64..253_402_300_799_000_000) {
            prop_assert_eq!(parse(&format(us)), Ok(us));
        }
    }
}
