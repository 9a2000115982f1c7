//! Frames between the supervisor and a zygote: a 4-byte big-endian length,
//! then that many bytes of JSON. Everything a zygote sends is untrusted (a
//! job may have taken it over): lengths are capped and JSON is parsed into
//! fixed types, never unpickled or evaluated.

use std::io::{Read, Write};

/// Largest frame accepted from a zygote at all; each read also has its own,
/// smaller cap (a result's `ResultCaps::result_bytes`, a header's 64 KiB).
pub const MAX_FRAME: usize = 256 << 20;

/// Writes one frame of JSON.
pub fn write_frame(w: &mut impl Write, value: &serde_json::Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_bytes_frame(w, &body)
}

/// Writes one frame of raw bytes.
pub fn write_bytes_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(4 + body.len());
    append_frame(&mut frame, body)?;
    w.write_all(&frame)?;
    w.flush()
}

/// Appends one frame of raw bytes to `out`: frames sent together go in one
/// write, so the reader wakes once for them.
pub fn append_frame(out: &mut Vec<u8>, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_caps() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &serde_json::json!({"a": 1})).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), br#"{"a":1}"#);
        assert!(read_frame(&mut r).unwrap().is_none());
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(read_frame(&mut huge.as_slice()).is_err());
        assert!(read_frame(&mut [0u8, 0, 0, 5, 1].as_slice()).is_err());
    }
}
