//! Lossy WebP through the system's libwebp (its one-call encoder: no structs whose layout
//! could differ between versions).

/// `pixels` (RGB, `width` x `height`) as a lossy WebP of `quality` (1-100).
pub fn encode_rgb(pixels: &[u8], width: u32, height: u32, quality: u8) -> Option<Vec<u8>> {
    let stride = width.checked_mul(3)?;
    if pixels.len() < stride as usize * height as usize {
        return None;
    }
    let mut out: *mut u8 = std::ptr::null_mut();
    // SAFETY: `pixels` holds `height` rows of `stride` bytes (checked above); libwebp writes
    // a buffer it allocates into `out` and returns its length (0 on failure).
    let len = unsafe {
        libwebp_sys::WebPEncodeRGB(
            pixels.as_ptr(),
            i32::try_from(width).ok()?,
            i32::try_from(height).ok()?,
            i32::try_from(stride).ok()?,
            f32::from(quality),
            &mut out,
        )
    };
    if out.is_null() {
        return None;
    }
    // SAFETY: libwebp returned `len` bytes at `out`; they are copied, then freed with its own
    // allocator.
    let bytes = (len > 0).then(|| unsafe { std::slice::from_raw_parts(out, len) }.to_vec());
    unsafe { libwebp_sys::WebPFree(out.cast()) };
    bytes
}
