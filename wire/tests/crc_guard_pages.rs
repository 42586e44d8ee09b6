//! The CRC32C kernel's first block is a masked 64-byte load that starts up to
//! 63 bytes before the buffer; the lanes before the buffer must be neither
//! read nor faulted on. Buffers placed right after and right before an
//! inaccessible page would crash this test if any byte outside them were
//! touched, and their checksums must still be right.

#![cfg(all(unix, target_arch = "x86_64"))]

use verity_wire::crc32c;

fn bitwise(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ if crc & 1 != 0 { 0x82F6_3B78 } else { 0 };
        }
    }
    !crc
}

/// Three pages, the first and last `PROT_NONE`; unmapped on drop.
struct Guarded {
    base: *mut u8,
    page: usize,
}

impl Guarded {
    fn new() -> Guarded {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: an anonymous private mapping of 3 pages at an address the
        // kernel picks; the result is checked before use.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                3 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        let base = base as *mut u8;
        // SAFETY: both ranges are whole pages inside the mapping made above.
        unsafe {
            assert_eq!(libc::mprotect(base.cast(), page, libc::PROT_NONE), 0);
            assert_eq!(
                libc::mprotect(base.add(2 * page).cast(), page, libc::PROT_NONE),
                0
            );
        }
        Guarded { base, page }
    }

    /// The accessible middle page.
    fn middle(&mut self) -> &mut [u8] {
        // SAFETY: the middle page is mapped read-write for the life of `self`
        // and only reachable through this `&mut self` borrow.
        unsafe { core::slice::from_raw_parts_mut(self.base.add(self.page), self.page) }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no borrow of it outlives `self`.
        unsafe { libc::munmap(self.base.cast(), 3 * self.page) };
    }
}

#[test]
fn crc32c_reads_nothing_outside_buffers_that_touch_an_inaccessible_page() {
    let mut g = Guarded::new();
    let page = g.page;
    let mid = g.middle();
    for (i, b) in mid.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(73) ^ (i >> 8) as u8;
    }
    for len in 0..=page {
        let at_start = &mid[..len];
        assert_eq!(crc32c(at_start), bitwise(at_start), "start, len {len}");
        let at_end = &mid[page - len..];
        assert_eq!(crc32c(at_end), bitwise(at_end), "end, len {len}");
    }
}
