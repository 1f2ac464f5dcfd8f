//! A bound on what untrusted automerge bytes decompress to, checked before
//! automerge sees them.
//!
//! automerge inflates a compressed change chunk, and every DEFLATE column of
//! a document chunk, into memory before it checks anything else: a 1 MB
//! body can claim gigabytes. This walk reads only the chunk headers and
//! column metadata, streams each compressed part through a decoder into a
//! counter (nothing is kept), and stops as soon as the total passes the
//! bound. It is written by hand because no crate parses automerge's chunk
//! layout without also inflating it (the layout is automerge's binary
//! format, `https://automerge.org/automerge-binary-format-spec/`).

use std::io::Read;

use crate::error::Error;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const DOCUMENT: u8 = 0;
const CHANGE: u8 = 1;
const COMPRESSED_CHANGE: u8 = 2;
/// Set in a column specification when the column is DEFLATE-compressed.
const DEFLATE_BIT: u64 = 0b1000;
const HASH_BYTES: u64 = 32;

/// Refuses `bytes` unless every chunk in it decodes to at most `max` bytes
/// in total; returns that total. Malformed framing is refused too
/// (automerge would refuse it).
pub fn check(bytes: &[u8], max: u64) -> Result<u64, Error> {
    let mut total: u64 = 0;
    let mut input = Cursor { bytes, at: 0 };
    while !input.done() {
        let magic = input.take(4)?;
        if magic != MAGIC {
            return Err(malformed("no automerge chunk here"));
        }
        input.take(4)?; // checksum: automerge checks it
        let kind = input.take(1)?[0];
        let len = input.leb()?;
        let data = input.take(len)?;
        let decoded = match kind {
            DOCUMENT => document_size(data, max.saturating_sub(total))?,
            CHANGE => len,
            COMPRESSED_CHANGE => inflated_size(data, max.saturating_sub(total))?,
            other => return Err(malformed(&format!("chunk type {other} is not accepted"))),
        };
        total = total.saturating_add(decoded);
        if total > max {
            return Err(Error::DecompressedTooLarge { max });
        }
    }
    Ok(total)
}

/// The decoded size of a document chunk: its uncompressed bytes plus every
/// compressed column inflated (each against what is left of the bound).
fn document_size(data: &[u8], budget: u64) -> Result<u64, Error> {
    let mut input = Cursor { bytes: data, at: 0 };
    let actors = input.leb()?;
    for _ in 0..actors {
        let len = input.leb()?;
        input.take(len)?;
    }
    let heads = input.leb()?;
    input.take(heads.checked_mul(HASH_BYTES).ok_or_else(too_long)?)?;
    let mut columns = columns(&mut input)?;
    columns.extend(self::columns(&mut input)?);
    let mut total = data.len() as u64;
    for (spec, len) in columns {
        let column = input.take(len)?;
        if spec & DEFLATE_BIT == 0 {
            continue;
        }
        total -= len;
        let left = budget.saturating_sub(total);
        total = total.saturating_add(inflated_size(column, left)?);
        if total > budget {
            return Err(Error::DecompressedTooLarge { max: budget });
        }
    }
    Ok(total)
}

/// Column metadata: a count, then (specification, length) pairs.
fn columns(input: &mut Cursor<'_>) -> Result<Vec<(u64, u64)>, Error> {
    let count = input.leb()?;
    // Each pair takes at least two bytes: a count past that is a lie, and
    // must not size an allocation.
    if count > (input.left() / 2) as u64 {
        return Err(malformed("more columns than bytes"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        out.push((input.leb()?, input.leb()?));
    }
    Ok(out)
}

/// How many bytes `deflated` inflates to, reading at most `budget + 1` of
/// them into a counter (never into memory).
fn inflated_size(deflated: &[u8], budget: u64) -> Result<u64, Error> {
    let decoder = flate2::read::DeflateDecoder::new(deflated);
    let mut limited = decoder.take(budget.saturating_add(1));
    let n = std::io::copy(&mut limited, &mut std::io::sink())
        .map_err(|e| malformed(&format!("bad DEFLATE data: {e}")))?;
    if n > budget {
        return Err(Error::DecompressedTooLarge { max: budget });
    }
    Ok(n)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], Error> {
        let len = usize::try_from(len).map_err(|_| too_long())?;
        let end = self.at.checked_add(len).ok_or_else(too_long)?;
        let out = self.bytes.get(self.at..end).ok_or_else(too_long)?;
        self.at = end;
        Ok(out)
    }

    /// Unsigned LEB128, at most 10 bytes.
    fn leb(&mut self) -> Result<u64, Error> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.take(1)?[0];
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(malformed("LEB128 number overflows"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("LEB128 number too long"))
    }
}

fn too_long() -> Error {
    malformed("a length runs past the end of the bytes")
}

fn malformed(reason: &str) -> Error {
    Error::Automerge(format!("not automerge bytes: {reason}"))
}

/// A decompression bomb, for tests and benches: one compressed change chunk,
/// about 1 KB per MiB it claims, that inflates to `len` zero bytes (rounded
/// down to whole MiB). Not a valid change once inflated.
#[doc(hidden)]
pub fn bomb(len: usize) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..len / zeros.len() {
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(&zeros);
    }
    let body = enc.finish().unwrap_or_default();
    let mut out = MAGIC.to_vec();
    out.extend([0; 4]);
    out.push(COMPRESSED_CHANGE);
    let mut n = body.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn doc_bytes(text_len: usize) -> Vec<u8> {
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "k", "x".repeat(text_len))
            .expect("put");
        doc.save()
    }

    #[test]
    fn real_documents_pass_and_count_their_columns() {
        let bytes = doc_bytes(100_000);
        check(&bytes, 1 << 20).expect("a real document is within the bound");
        let err = check(&bytes, 50_000).expect_err("100 KB of text exceeds 50 KB");
        assert!(matches!(err, Error::DecompressedTooLarge { .. }), "{err}");
    }

    #[test]
    fn a_bomb_is_refused_without_inflating_it() {
        let bytes = bomb(256 << 20);
        assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
        let err = check(&bytes, 64 << 20).expect_err("256 MiB is over the bound");
        assert!(matches!(err, Error::DecompressedTooLarge { .. }), "{err}");
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x85\x6f\x4a\x83",
            b"junk",
            &[0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 0, 0xff],
        ] {
            let _ = check(bytes, 1 << 20);
        }
        let mut lying = MAGIC.to_vec();
        lying.extend([0, 0, 0, 0, DOCUMENT, 3, 0, 0, 0x7f]);
        assert!(check(&lying, 1 << 20).is_err());
    }
}
