//! The 12-byte header every message body starts with:
//! bytes 0..6 send time (ns since the run's epoch, 48 bits, big-endian — 78 h of range),
//! bytes 6..8 producer id, bytes 8..12 sequence number within that producer.
//! The rest of the body is zeros.

pub const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sent_ns: u64,
    pub producer: u16,
    pub seq: u32,
}

pub fn encode(buf: &mut [u8], stamp: Stamp) {
    let ts = stamp.sent_ns.to_be_bytes();
    buf[0..6].copy_from_slice(&ts[2..8]);
    buf[6..8].copy_from_slice(&stamp.producer.to_be_bytes());
    buf[8..12].copy_from_slice(&stamp.seq.to_be_bytes());
}

pub fn decode(buf: &[u8]) -> Option<Stamp> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let mut ts = [0u8; 8];
    ts[2..8].copy_from_slice(&buf[0..6]);
    Some(Stamp {
        sent_ns: u64::from_be_bytes(ts),
        producer: u16::from_be_bytes([buf[6], buf[7]]),
        seq: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Stamp {
            sent_ns: (1 << 47) + 12345,
            producer: 513,
            seq: 0xdead_beef,
        };
        let mut buf = vec![0u8; 16];
        encode(&mut buf, s);
        assert_eq!(decode(&buf), Some(s));
        assert_eq!(decode(&buf[..11]), None);
    }
}
