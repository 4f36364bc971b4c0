//! CRC-64/Jones as Redis computes it over RDB files and DUMP payloads (reflected,
//! polynomial 0xad93d23594c935a9, initial value 0, no final xor), eight bytes at a time.
//! Every backup checks it against the trailer of the RDB Redis wrote, and Redis checks
//! it on every RESTORE payload, so a wrong table cannot go unnoticed.

/// The reflected polynomial.
const POLYNOMIAL: u64 = 0x95ac_9329_ac4b_c9b5;

/// `TABLES[k][b]`: the CRC of byte `b` followed by `k` zero bytes (slice-by-8).
const TABLES: [[u64; 256]; 8] = tables();

const fn tables() -> [[u64; 256]; 8] {
    let mut tables = [[0u64; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLYNOMIAL } else { crc >> 1 };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut byte = 0;
        while byte < 256 {
            let previous = tables[k - 1][byte];
            tables[k][byte] = (previous >> 8) ^ tables[0][(previous & 0xff) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
}

/// A running CRC-64 over bytes fed in any pieces.
#[derive(Debug, Clone, Copy, Default)]
pub struct Crc64(u64);

impl Crc64 {
    pub fn update(&mut self, mut data: &[u8]) {
        let mut crc = self.0;
        while data.len() >= 8 {
            let word =
                crc ^ u64::from_le_bytes([data[0], data[1], data[2], data[3], data[4], data[5], data[6], data[7]]);
            crc = TABLES[7][(word & 0xff) as usize]
                ^ TABLES[6][((word >> 8) & 0xff) as usize]
                ^ TABLES[5][((word >> 16) & 0xff) as usize]
                ^ TABLES[4][((word >> 24) & 0xff) as usize]
                ^ TABLES[3][((word >> 32) & 0xff) as usize]
                ^ TABLES[2][((word >> 40) & 0xff) as usize]
                ^ TABLES[1][((word >> 48) & 0xff) as usize]
                ^ TABLES[0][(word >> 56) as usize];
            data = &data[8..];
        }
        for &byte in data {
            crc = TABLES[0][((crc ^ byte as u64) & 0xff) as usize] ^ (crc >> 8);
        }
        self.0 = crc;
    }

    pub fn value(&self) -> u64 {
        self.0
    }

    /// The CRC of `data` alone.
    pub fn of(data: &[u8]) -> u64 {
        let mut crc = Crc64::default();
        crc.update(data);
        crc.value()
    }
}
