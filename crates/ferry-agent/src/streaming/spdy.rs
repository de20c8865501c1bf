//! The part of SPDY/3.1 that Kubernetes' port-forward uses (as Go's `spdystream` speaks it):
//! frames, and header blocks compressed with zlib over SPDY/3's dictionary.
//!
//! A control frame is `1 | version(15) | type(16) | flags(8) | length(24) | data`; a data frame
//! `0 | stream id(31) | flags(8) | length(24) | data`. Header blocks are one zlib stream per
//! direction, flushed (sync) at the end of every block. The client's stream names the SPDY/3
//! dictionary; inflating a raw deflate stream after a stored block holding the dictionary gives
//! the same bytes, so the pure-Rust backend of `flate2` suffices. Our own blocks are compressed
//! without a dictionary, which every inflater reads. Flow control (`WINDOW_UPDATE`) is ignored
//! as `spdystream` ignores it.

use std::collections::BTreeMap;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Control frame types.
pub mod kind {
    /// Opens a stream.
    pub const SYN_STREAM: u16 = 1;
    /// Accepts a stream.
    pub const SYN_REPLY: u16 = 2;
    /// Aborts a stream.
    pub const RST_STREAM: u16 = 3;
    /// Session settings.
    pub const SETTINGS: u16 = 4;
    /// Echoed back.
    pub const PING: u16 = 6;
    /// Ends the session.
    pub const GOAWAY: u16 = 7;
    /// More headers.
    pub const HEADERS: u16 = 8;
    /// Flow control.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// The last frame of a stream in this direction.
pub const FLAG_FIN: u8 = 0x01;

/// The SPDY/3 header dictionary (draft 3, section 2.6.10.1): length-prefixed names, then a
/// tail of common values. Its Adler-32 is `0xe3c6a7c2`.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

/// A SPDY protocol violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SPDY: {0}")]
pub struct SpdyError(pub String);

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Data for a stream.
    Data {
        /// The stream.
        stream: u32,
        /// Flags (`FLAG_FIN`).
        flags: u8,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A control frame; header blocks still compressed.
    Control {
        /// The type.
        kind: u16,
        /// Flags.
        flags: u8,
        /// The payload.
        data: Vec<u8>,
    },
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.buf.len() < 8 {
            return None;
        }
        let len = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if self.buf.len() < 8 + len {
            return None;
        }
        let head: [u8; 8] = self.buf[..8].try_into().ok()?;
        let data = self.buf[8..8 + len].to_vec();
        self.buf.drain(..8 + len);
        let flags = head[4];
        Some(if head[0] & 0x80 != 0 {
            Frame::Control {
                kind: u16::from_be_bytes([head[2], head[3]]),
                flags,
                data,
            }
        } else {
            Frame::Data {
                stream: u32::from_be_bytes([head[0] & 0x7f, head[1], head[2], head[3]]),
                flags,
                data,
            }
        })
    }
}

/// Encodes a data frame.
pub fn data_frame(stream: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

/// Encodes a control frame.
pub fn control_frame(kind: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&[0x80, 0x03]);
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

/// The stream id at the start of a control frame's payload.
pub fn stream_id(data: &[u8]) -> Option<u32> {
    let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b) & 0x7fff_ffff)
}

/// Headers: lower-case names to values.
pub type Headers = BTreeMap<String, String>;

/// The receiving side's header decompressor.
pub struct HeaderReader {
    inflate: Decompress,
    started: bool,
}

impl Default for HeaderReader {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderReader {
    /// A decompressor primed with the dictionary.
    pub fn new() -> Self {
        HeaderReader {
            inflate: Decompress::new(false),
            started: false,
        }
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let status = self
                .inflate
                .decompress(input, &mut buf, FlushDecompress::Sync)
                .map_err(|e| SpdyError(format!("bad header block: {e}")))?;
            let used = (self.inflate.total_in() - before_in) as usize;
            let made = (self.inflate.total_out() - before_out) as usize;
            out.extend_from_slice(&buf[..made]);
            input = &input[used..];
            if status == Status::StreamEnd || (input.is_empty() && made < buf.len()) {
                return Ok(out);
            }
            if used == 0 && made == 0 {
                return Err(SpdyError("the header block does not decompress".into()));
            }
        }
    }

    /// Decodes one compressed header block.
    pub fn read(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut block = block;
        if !self.started {
            // The zlib header (and the dictionary id), then history = the dictionary, fed as a
            // stored block whose output is dropped.
            let (&cmf, rest) = block
                .split_first()
                .ok_or_else(|| SpdyError("empty header block".into()))?;
            let (&flg, rest) = rest
                .split_first()
                .ok_or_else(|| SpdyError("short header block".into()))?;
            if cmf & 0x0f != 8 {
                return Err(SpdyError("header block is not deflate".into()));
            }
            block = if flg & 0x20 != 0 {
                rest.get(4..)
                    .ok_or_else(|| SpdyError("short header block".into()))?
            } else {
                rest
            };
            let dict = dictionary();
            let len = dict.len() as u16;
            let mut stored = vec![0u8];
            stored.extend_from_slice(&len.to_le_bytes());
            stored.extend_from_slice(&(!len).to_le_bytes());
            stored.extend_from_slice(&dict);
            let primed = self.inflate(&stored)?;
            if primed != dict {
                return Err(SpdyError("cannot prime the header dictionary".into()));
            }
            self.started = true;
        }
        let raw = self.inflate(block)?;
        parse_headers(&raw)
    }
}

fn parse_headers(raw: &[u8]) -> Result<Headers, SpdyError> {
    let short = || SpdyError("truncated header block".into());
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Result<usize, SpdyError> {
        let b: [u8; 4] = raw
            .get(*at..*at + 4)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?;
        *at += 4;
        Ok(u32::from_be_bytes(b) as usize)
    };
    let n = u32_at(&mut at)?;
    let mut headers = Headers::new();
    for _ in 0..n.min(1024) {
        let len = u32_at(&mut at)?;
        let name = raw.get(at..at + len).ok_or_else(short)?;
        at += len;
        let len = u32_at(&mut at)?;
        let value = raw.get(at..at + len).ok_or_else(short)?;
        at += len;
        headers.insert(
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        );
    }
    Ok(headers)
}

/// The sending side's header compressor.
pub struct HeaderWriter {
    deflate: Compress,
}

impl Default for HeaderWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderWriter {
    /// A compressor (zlib format, no dictionary).
    pub fn new() -> Self {
        HeaderWriter {
            deflate: Compress::new(Compression::default(), true),
        }
    }

    /// One compressed header block.
    pub fn write(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input: &[u8] = &raw;
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            if self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done once all input is taken and the flush left spare room.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // Adler-32, as the dictionary id of kubectl's header stream says.
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &d {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn reads_kubectls_first_header_block() {
        // Captured from kubectl v1.32 port-forward: the error stream of request 0, port 80.
        let block = [
            0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
            0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x86, 0x14, 0xcb, 0x45, 0xa0,
            0x24, 0xcc, 0x64, 0x61, 0xc0, 0xc0, 0xc0, 0xc0, 0x59, 0x04, 0x89, 0xc4, 0x4c, 0x50,
            0xe2, 0x66, 0x34, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let h = HeaderReader::new().read(&block).unwrap();
        assert_eq!(h["streamtype"], "error");
        assert_eq!(h["port"], "80");
        assert_eq!(h["requestid"], "0");
    }

    #[test]
    fn our_header_blocks_round_trip_through_one_stream() {
        let mut w = HeaderWriter::new();
        let mut r = Decompress::new(true);
        for n in 0..3 {
            let port = n.to_string();
            let block = w.write(&[("port", &port), ("streamtype", "data")]);
            let mut out = Vec::with_capacity(1024);
            r.decompress_vec(&block, &mut out, FlushDecompress::Sync)
                .unwrap();
            let h = parse_headers(&out).unwrap();
            assert_eq!(h["port"], port);
        }
    }

    #[test]
    fn frames_split_and_join() {
        let mut r = Reader::default();
        let d = data_frame(3, FLAG_FIN, b"hello");
        let c = control_frame(kind::PING, 0, &7u32.to_be_bytes());
        r.push(&d[..4]);
        assert_eq!(r.next_frame(), None);
        r.push(&d[4..]);
        r.push(&c);
        assert_eq!(
            r.next_frame(),
            Some(Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec()
            })
        );
        assert!(matches!(
            r.next_frame(),
            Some(Frame::Control {
                kind: kind::PING,
                ..
            })
        ));
        assert_eq!(r.next_frame(), None);
    }
}
