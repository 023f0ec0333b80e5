//! EXIF orientation (tag 0x0112): how a camera says its pixels are to be turned for display.
//! Variants are turned upright and carry no EXIF, so they display the same everywhere.

/// The file's orientation, 1 (as stored) when it has none or an unreadable one.
pub fn of(file: &[u8]) -> u32 {
    let Ok(exif) = exif::Reader::new().read_from_container(&mut std::io::Cursor::new(file)) else {
        return 1;
    };
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .filter(|o| (1..=8).contains(o))
        .unwrap_or(1)
}

/// Whether a picture of EXIF orientation `o` is shown as stored (1, or none given).
pub fn is_upright(o: u32) -> bool {
    !(2..=8).contains(&o)
}

/// Orientations 5-8 turn the picture a quarter: width and height change places.
pub fn swaps_axes(o: u32) -> bool {
    (5..=8).contains(&o)
}

/// RGB pixels of `w` x `h` turned upright; returns them with the upright size.
pub fn apply(pixels: Vec<u8>, w: u32, h: u32, o: u32) -> (Vec<u8>, u32, u32) {
    apply_n(pixels, w, h, o, 3)
}

/// `apply` for pixels of `n` bytes each (4: RGBA).
pub fn apply_n(pixels: Vec<u8>, w: u32, h: u32, o: u32, n: usize) -> (Vec<u8>, u32, u32) {
    if is_upright(o) {
        return (pixels, w, h);
    }
    let (w, h) = (w as usize, h as usize);
    let (ow, oh) = if swaps_axes(o) { (h, w) } else { (w, h) };
    let mut out = super::scratch::take(pixels.len());
    for y in 0..oh {
        for x in 0..ow {
            // The stored pixel shown at (x, y) once upright (EXIF 2.3, tag 0x0112).
            let (sx, sy) = match o {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                _ => (w - 1 - y, x),
            };
            let (d, s) = ((y * ow + x) * n, (sy * w + sx) * n);
            if let (Some(dst), Some(src)) = (out.get_mut(d..d + n), pixels.get(s..s + n)) {
                dst.copy_from_slice(src);
            }
        }
    }
    super::scratch::give(pixels);
    (out, ow as u32, oh as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2x1 picture [A B] for each orientation, as it is stored, and what shows upright.
    #[test]
    fn turns_like_exif_says() {
        let a = [1u8, 1, 1];
        let b = [2u8, 2, 2];
        let stored: Vec<u8> = [a, b].concat();
        // 6: the camera was turned clockwise; the top row becomes the right column.
        let (p, w, h) = apply(stored.clone(), 2, 1, 6);
        assert_eq!((w, h), (1, 2));
        assert_eq!(p, [a, b].concat());
        // 8: counter-clockwise; the top row becomes the left column, read upwards.
        let (p, w, h) = apply(stored.clone(), 2, 1, 8);
        assert_eq!((w, h), (1, 2));
        assert_eq!(p, [b, a].concat());
        let (p, _, _) = apply(stored.clone(), 2, 1, 2);
        assert_eq!(p, [b, a].concat());
        let (p, _, _) = apply(stored.clone(), 2, 1, 1);
        assert_eq!(p, stored);
        assert!(swaps_axes(6) && !swaps_axes(3));
        assert_eq!(of(b"not a jpeg"), 1);
    }
}
