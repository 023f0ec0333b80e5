//! WebP through the system's libwebp (its one-call encoders: no structs whose layout could
//! differ between versions): lossy for photos, lossless for drawings.

/// `pixels` (RGB, `width` x `height`) as a lossy WebP of `quality` (1-100).
pub fn encode_rgb(pixels: &[u8], width: u32, height: u32, quality: u8) -> Option<Vec<u8>> {
    let stride = rows_of(pixels, width, height, 3)?;
    let mut out: *mut u8 = std::ptr::null_mut();
    // SAFETY: `pixels` holds `height` rows of `stride` bytes (checked by `rows_of`); libwebp
    // writes a buffer it allocates into `out` and returns its length (0 on failure).
    let len = unsafe {
        libwebp_sys::WebPEncodeRGB(
            pixels.as_ptr(),
            i32::try_from(width).ok()?,
            i32::try_from(height).ok()?,
            stride,
            f32::from(quality),
            &mut out,
        )
    };
    take(out, len)
}

/// `pixels` (RGB when `channels` is 3, RGBA when 4) as a lossless WebP.
pub fn encode_lossless(pixels: &[u8], width: u32, height: u32, channels: u32) -> Option<Vec<u8>> {
    let stride = rows_of(pixels, width, height, channels)?;
    let (w, h) = (i32::try_from(width).ok()?, i32::try_from(height).ok()?);
    let mut out: *mut u8 = std::ptr::null_mut();
    // SAFETY: as in `encode_rgb`, for `channels` bytes a pixel.
    let len = unsafe {
        match channels {
            3 => libwebp_sys::WebPEncodeLosslessRGB(pixels.as_ptr(), w, h, stride, &mut out),
            4 => libwebp_sys::WebPEncodeLosslessRGBA(pixels.as_ptr(), w, h, stride, &mut out),
            _ => return None,
        }
    };
    take(out, len)
}

/// The stride of `height` rows of `width` pixels of `channels` bytes, if `pixels` holds
/// them all.
fn rows_of(pixels: &[u8], width: u32, height: u32, channels: u32) -> Option<i32> {
    let stride = width.checked_mul(channels)?;
    if pixels.len() < (stride as usize).checked_mul(height as usize)? {
        return None;
    }
    i32::try_from(stride).ok()
}

/// The encoder's output, copied, and its buffer freed.
fn take(out: *mut u8, len: usize) -> Option<Vec<u8>> {
    if out.is_null() {
        return None;
    }
    // SAFETY: libwebp returned `len` bytes at `out`; they are copied, then freed with its own
    // allocator.
    let bytes = (len > 0).then(|| unsafe { std::slice::from_raw_parts(out, len) }.to_vec());
    unsafe { libwebp_sys::WebPFree(out.cast()) };
    bytes
}
