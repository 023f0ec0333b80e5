//! Pixel buffers reused by each image thread. A 1600x1200 photo decodes to 5.8 MB; a fresh
//! buffer of that size is new pages from the kernel, faulted in and zeroed one by one, and
//! the allocator hands them back as soon as they are freed (`dirty_decay_ms:0`, so that an
//! evicted body's memory returns to the system): without reuse, page faults took more of a
//! hero variant's time than decoding it.

use std::cell::RefCell;

/// Buffers kept per thread: a variant needs at most three at once (decoded, resized, turned).
const KEPT: usize = 3;
/// Larger buffers are not kept (the pixel limit allows pictures far larger than photos).
const MAX_KEPT_BYTES: usize = 64 << 20;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` zeroed bytes, reusing one this thread gave back when it can.
pub fn take(len: usize) -> Vec<u8> {
    let reused = FREE.with(|free| {
        let mut free = free.try_borrow_mut().ok()?;
        // The smallest kept buffer that holds `len`, else the largest (it grows once).
        let at = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
            .map(|(i, _)| i)?;
        Some(free.swap_remove(at))
    });
    let mut buf = reused.unwrap_or_default();
    buf.clear();
    buf.resize(len, 0);
    buf
}

/// Gives a buffer back for this thread's next variant.
pub fn give(buf: Vec<u8>) {
    if buf.capacity() > MAX_KEPT_BYTES || buf.capacity() == 0 {
        return;
    }
    FREE.with(|free| {
        if let Ok(mut free) = free.try_borrow_mut() {
            if free.len() < KEPT {
                free.push(buf);
            } else if let Some(smallest) = free.iter_mut().min_by_key(|b| b.capacity()) {
                if smallest.capacity() < buf.capacity() {
                    *smallest = buf;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_zeroed_and_reused() {
        let mut a = take(1000);
        assert_eq!(a.len(), 1000);
        a.fill(7);
        let ptr = a.as_ptr();
        give(a);
        let b = take(500);
        assert_eq!(b.as_ptr(), ptr, "the kept buffer is reused");
        assert!(b.iter().all(|&x| x == 0), "and zeroed");
        give(b);
        give(Vec::with_capacity(MAX_KEPT_BYTES + 1));
        assert!(FREE.with(|f| f.borrow().iter().all(|b| b.capacity() <= MAX_KEPT_BYTES)));
    }
}
