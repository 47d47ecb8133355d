//! The secondary 64-bit DCT pHash, computed with `image_hasher` (the maintained fork of
//! `img_hash`): median threshold over the 8×8 low frequencies of a DCT.
//!
//! It is computed from the same 64×64 filtered buffer PDQ uses rather than from the
//! full image: `image_hasher` would otherwise Lanczos-resize the whole decoded image,
//! which costs as much as decoding it, and the 64×64 buffer already holds all the
//! detail a 16×16 DCT input can use.

use image::{GrayImage, Luma};
use image_hasher::{HashAlg, Hasher, HasherConfig};

use super::pdq::DOWNSAMPLE;

thread_local! {
    /// Built once per thread: the configuration plans its DCT when it is built.
    static HASHER: Hasher = HasherConfig::new()
        .hash_size(8, 8)
        .hash_alg(HashAlg::Median)
        .preproc_dct()
        .resize_filter(image::imageops::FilterType::Triangle)
        .to_hasher();
}

/// 64-bit pHash of a filtered 64×64 luminance buffer; bit `i` of the result is bit `i`
/// of image_hasher's byte output (byte `i / 8`, most significant bit first).
pub fn phash_64(buf: &[f32; DOWNSAMPLE * DOWNSAMPLE]) -> u64 {
    let side = DOWNSAMPLE as u32;
    let gray = GrayImage::from_fn(side, side, |x, y| {
        let v = buf[(y * side + x) as usize];
        Luma([v.round().clamp(0.0, 255.0) as u8])
    });
    let hash = HASHER.with(|hasher| hasher.hash_image(&gray));
    let bytes = hash.as_bytes();
    let mut out = [0u8; 8];
    out[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
    u64::from_be_bytes(out)
}
