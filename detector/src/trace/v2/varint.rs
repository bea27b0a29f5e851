//! LEB128 varints and zigzag, as format v2 writes every integer of an item.

/// Longest varint of a u64.
pub(crate) const MAX_VARINT_LEN: usize = 10;

#[inline]
pub(crate) fn put(out: &mut Vec<u8>, v: u64) {
    let mut b = [0u8; MAX_VARINT_LEN];
    let n = put_at(&mut b, 0, v);
    out.extend_from_slice(&b[..n]);
}

/// Writes `v` at `b[at..]`, returning the position after it. The caller
/// leaves room for [`MAX_VARINT_LEN`] bytes.
#[inline]
pub(crate) fn put_at(b: &mut [u8], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        b[at] = v as u8 | 0x80;
        at += 1;
        v >>= 7;
    }
    b[at] = v as u8;
    at + 1
}

/// The varint at `*pos`, advancing past it. `None` when the bytes end
/// inside it or it does not fit in 64 bits (an eleventh byte, or a tenth
/// carrying more than the top bit).
#[inline]
pub(crate) fn get(b: &[u8], pos: &mut usize) -> Option<u64> {
    // Most values of an item (masks, small deltas) take one byte.
    let first = *b.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u64::from(first));
    }
    get_long(b, pos)
}

#[inline(never)]
fn get_long(b: &[u8], pos: &mut usize) -> Option<u64> {
    // With ten bytes at hand (all but a block's last few values), no byte
    // needs its own bounds check.
    if let Some(w) = b.get(*pos..*pos + MAX_VARINT_LEN) {
        let w: &[u8; MAX_VARINT_LEN] = w.try_into().ok()?;
        let mut v = 0u64;
        for (i, &byte) in w.iter().enumerate() {
            if i == MAX_VARINT_LEN - 1 && byte > 1 {
                return None;
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                *pos += i + 1;
                return Some(v);
            }
        }
        return None;
    }
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lengths() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            1 << 63,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put(&mut b, v);
            assert!(b.len() <= MAX_VARINT_LEN);
            let mut pos = 0;
            assert_eq!(get(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
            // Every proper prefix is incomplete.
            for cut in 0..b.len() {
                assert_eq!(get(&b[..cut], &mut 0), None);
            }
        }
        let mut b = [0u8; MAX_VARINT_LEN + 3];
        let end = put_at(&mut b, 3, u64::MAX);
        assert_eq!(end, 3 + MAX_VARINT_LEN);
        assert_eq!(get(&b, &mut 3), Some(u64::MAX));
        for v in [0i64, 1, -1, 17, -17, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    /// The path with ten bytes at hand and the one near the end of the
    /// bytes agree on every length and on what they refuse.
    #[test]
    fn both_paths_agree() {
        for v in (0..64).map(|s| 1u64 << s).chain([0, 127, 128, u64::MAX]) {
            let mut b = Vec::new();
            put(&mut b, v);
            let n = b.len();
            b.extend_from_slice(&[0xaa; 12]);
            let (mut far, mut near) = (0, 0);
            assert_eq!(get(&b, &mut far), Some(v));
            assert_eq!(get(&b[..n], &mut near), Some(v));
            assert_eq!((far, near), (n, n));
        }
        let mut bad = vec![0xffu8; 9];
        bad.push(0x02);
        bad.extend_from_slice(&[0; 5]);
        assert_eq!(get(&bad, &mut 0), None);
        assert_eq!(get(&bad[..10], &mut 0), None);
    }

    #[test]
    fn overlong_varints_are_refused() {
        // Ten bytes whose last one carries more than bit 63.
        let mut b = vec![0xffu8; 9];
        b.push(0x02);
        assert_eq!(get(&b, &mut 0), None);
        // Eleven bytes.
        let mut b = vec![0x80u8; 10];
        b.push(0x00);
        assert_eq!(get(&b, &mut 0), None);
        // The largest value is exactly ten bytes ending in 0x01.
        let mut b = vec![0xffu8; 9];
        b.push(0x01);
        assert_eq!(get(&b, &mut 0), Some(u64::MAX));
    }
}
