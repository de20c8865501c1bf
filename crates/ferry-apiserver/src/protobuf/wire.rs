//! The protobuf wire format: varints, length-delimited slices, skipping unknown fields.
//! Every read checks the remaining buffer; nothing allocates.

/// Protobuf wire types.
pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const FIXED32: u8 = 5;

/// A wire-level failure: where, and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fault {
    pub offset: usize,
    pub reason: &'static str,
}

/// A cursor over one message's bytes; `base` is its offset in the request body.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The offset of the next byte in the request body.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn fault(&self, reason: &'static str) -> Fault {
        Fault {
            offset: self.offset(),
            reason,
        }
    }

    pub fn varint(&mut self) -> Result<u64, Fault> {
        let start = *self;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(start.fault("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(start.fault("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(start.fault("varint longer than 10 bytes"))
    }

    /// A field key: (field number, wire type).
    pub fn key(&mut self) -> Result<(u32, u8), Fault> {
        let start = *self;
        let key = self.varint()?;
        let tag = key >> 3;
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(start.fault("invalid field number"));
        }
        Ok((tag as u32, (key & 7) as u8))
    }

    fn take(&mut self, n: usize, reason: &'static str) -> Result<&'a [u8], Fault> {
        if n > self.buf.len() - self.pos {
            return Err(self.fault(reason));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A length-delimited value, as a reader over its bytes.
    pub fn len_delimited(&mut self) -> Result<Reader<'a>, Fault> {
        let start = *self;
        let len = self.varint()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if len > remaining {
            return Err(start.fault("length runs past the end of the message"));
        }
        let base = self.offset();
        let bytes = self.take(len as usize, "length runs past the end of the message")?;
        Ok(Reader::new(bytes, base))
    }

    pub fn fixed64(&mut self) -> Result<[u8; 8], Fault> {
        let s = self.take(8, "truncated 64-bit value")?;
        let mut out = [0; 8];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// The rest of the bytes.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos.min(self.buf.len())..]
    }

    /// Skips one value of wire type `wire_type`.
    pub fn skip(&mut self, wire_type: u8) -> Result<(), Fault> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8, "truncated 64-bit value").map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4, "truncated 32-bit value").map(drop),
            3 | 4 => Err(self.fault("protobuf groups are not used by Kubernetes")),
            _ => Err(self.fault("invalid wire type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut r = Reader::new(&[0x96, 0x01, 0x00], 0);
        assert_eq!(r.varint(), Ok(150));
        assert_eq!(r.varint(), Ok(0));
        assert!(r.is_empty());
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max, 0).varint(), Ok(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(
            Reader::new(&over, 0).varint().unwrap_err().reason,
            "varint overflows 64 bits"
        );
        let fault = Reader::new(&[0x80, 0x80], 7).varint().unwrap_err();
        assert_eq!(
            fault,
            Fault {
                offset: 7,
                reason: "truncated varint"
            }
        );
    }

    #[test]
    fn lengths_are_checked() {
        // Length 5 with 2 bytes left; a huge length.
        assert!(Reader::new(&[5, 1, 2], 0).len_delimited().is_err());
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(Reader::new(&huge, 0).len_delimited().is_err());
        let mut r = Reader::new(&[2, 9, 8, 7], 10);
        let inner = r.len_delimited().unwrap();
        assert_eq!(inner.rest(), &[9, 8]);
        assert_eq!(inner.offset(), 11);
        assert_eq!(r.rest(), &[7]);
    }

    #[test]
    fn skipping() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9], 0);
        r.skip(FIXED64).unwrap();
        assert_eq!(r.rest(), &[9]);
        assert!(Reader::new(&[1, 2, 3], 0).skip(FIXED32).is_err());
        assert!(Reader::new(&[1], 0).skip(3).is_err());
        assert!(Reader::new(&[1], 0).skip(7).is_err());
        assert_eq!(
            Reader::new(&[0], 0).key().unwrap_err().reason,
            "invalid field number"
        );
    }
}
