//! The BRIEF sampling pattern: 256 point pairs in a disc of radius [`PATTERN_RADIUS`].
//!
//! Generated at compile time by integer-only arithmetic (a splitmix64 stream and an
//! Irwin–Hall sum of four uniforms as an approximately Gaussian offset, σ ≈ 6.3 px), so
//! it is the same on every platform and in every build. **Stored descriptors depend on
//! it bit for bit**: changing anything here means bumping
//! [`super::FORMAT_VERSION`] and re-extracting every stored image.
//!
//! Pairs come in mirror twins: pair `2k + 1` is pair `2k` reflected across the
//! keypoint's orientation axis (`y → −y` in the steered frame). Reflecting an image left
//! to right therefore only swaps the twin bits of each descriptor (see
//! [`super::mirrored`]): a mirrored copy is matched without extracting twice.

/// Every pattern point lies within this many pixels of the keypoint (before and after
/// steering), so a keypoint needs this margin plus one for rounding.
pub const PATTERN_RADIUS: i32 = 13;

/// `[x1, y1, x2, y2]` per bit, in the steered frame of the keypoint (x along its
/// orientation). Bit `i` is set when the smoothed image is darker at point 1 than at
/// point 2.
pub static PATTERN: [[i8; 4]; 256] = generate();

const fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A point offset: sum of four uniforms in −5..=5 (variance 40), within the radius.
const fn point(state: &mut u64) -> (i32, i32) {
    loop {
        let mut x = 0i32;
        let mut y = 0i32;
        let mut k = 0;
        while k < 4 {
            x += (splitmix64(state) % 11) as i32 - 5;
            y += (splitmix64(state) % 11) as i32 - 5;
            k += 1;
        }
        if x * x + y * y <= PATTERN_RADIUS * PATTERN_RADIUS {
            return (x, y);
        }
    }
}

const fn generate() -> [[i8; 4]; 256] {
    let mut out = [[0i8; 4]; 256];
    let mut state = 0x6C6F_6F6B_616C_696Bu64; // "lookalik"
    let mut i = 0;
    while i < 128 {
        let (x1, y1) = point(&mut state);
        let (x2, y2) = point(&mut state);
        let (dx, dy) = (x1 - x2, y1 - y2);
        let too_close = dx * dx + dy * dy < 9;
        // Its own mirror twin (both points on the axis), or its twin with the points
        // swapped (twin bit = inverse): either would break the swap-the-twins mirror rule.
        let self_twin = y1 == 0 && y2 == 0;
        let swapped_twin = x1 == x2 && y1 == -y2;
        if !too_close && !self_twin && !swapped_twin {
            out[2 * i] = [x1 as i8, y1 as i8, x2 as i8, y2 as i8];
            out[2 * i + 1] = [x1 as i8, -y1 as i8, x2 as i8, -y2 as i8];
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_in_the_disc_and_twinned() {
        let mut seen = std::collections::HashSet::new();
        for (i, p) in PATTERN.iter().enumerate() {
            for (x, y) in [(p[0], p[1]), (p[2], p[3])] {
                let (x, y) = (i32::from(x), i32::from(y));
                assert!(x * x + y * y <= PATTERN_RADIUS * PATTERN_RADIUS, "bit {i}: {p:?}");
            }
            assert!(seen.insert(*p), "bit {i} repeats {p:?}");
        }
        for twins in PATTERN.chunks_exact(2) {
            let (a, b) = (twins[0], twins[1]);
            assert_eq!(b, [a[0], -a[1], a[2], -a[3]]);
        }
        // Offsets spread like the Gaussian they approximate: σ ≈ 6.3 px.
        let var: f64 = PATTERN.iter().flat_map(|p| p.iter()).map(|&v| f64::from(v).powi(2)).sum::<f64>() / 1024.0;
        assert!((4.5..7.5).contains(&var.sqrt()), "σ = {}", var.sqrt());
    }

    #[test]
    fn pattern_is_pinned() {
        // Stored descriptors depend on the pattern: a change here must bump the format.
        let checksum =
            PATTERN.iter().flatten().fold(0u64, |h, &v| (h ^ u64::from(v as u8)).wrapping_mul(0x100_0000_01B3));
        assert_eq!(checksum, 0xd063_6fea_3437_2a6c, "pattern changed: checksum {checksum:#x}");
    }
}
