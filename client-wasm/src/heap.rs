//! The tag's allocator: power-of-two size classes, one free list each, and
//! a bump pointer into memory grown on demand.
//!
//! # Design
//! dlmalloc, the allocator std uses on wasm32, is 6 KB of the module (2.7 KB
//! gzipped, measured with `cargo xtask build-tag`), more than any part of
//! the tag's own logic. The tag allocates little: short strings crossing
//! from JS (method names, header values) and a few small vectors, freed soon
//! after. Size classes fit that: a freed block is reused by the next
//! allocation of its class, so memory stays bounded by the peak use of each
//! class (at most twice the bytes asked for), and nothing leaks as it does
//! with a bump-only allocator or wee_alloc (RUSTSEC-2022-0054). Blocks are
//! aligned to their size (up to 4 KB), so a reused block suits any layout
//! of its class.

use core::alloc::Layout;

/// Classes 2^3 (8 bytes, room for the free-list link) to 2^31.
const CLASSES: usize = 29;
const MIN_SHIFT: u32 = 3;
/// Largest alignment given; a layout asking for more fails.
const MAX_ALIGN: usize = 4096;

/// Free lists and the bump region `[top, end)`.
pub struct Heap {
    free: [usize; CLASSES],
    top: usize,
    end: usize,
}

impl Heap {
    /// An empty heap; the first allocation asks `grow` for memory.
    pub const fn new() -> Heap {
        Heap {
            free: [0; CLASSES],
            top: 0,
            end: 0,
        }
    }

    /// The class index and block size for `layout`.
    fn class(layout: Layout) -> Option<(usize, usize)> {
        let size = layout
            .size()
            .max(layout.align())
            .max(1 << MIN_SHIFT)
            .checked_next_power_of_two()?;
        let index = (size.trailing_zeros() - MIN_SHIFT) as usize;
        (index < CLASSES && layout.align() <= MAX_ALIGN).then_some((index, size))
    }

    /// A block for `layout`, or null. `grow(end, bytes)` extends the region
    /// at `end` by at least `bytes` and returns the new end (`None` when out
    /// of memory); it is called as `grow(0, 0)` first to learn where the
    /// region starts.
    ///
    /// # Safety
    /// Memory from `grow` must be owned by this heap.
    pub unsafe fn alloc(
        &mut self,
        layout: Layout,
        mut grow: impl FnMut(usize, usize) -> Option<usize>,
    ) -> *mut u8 {
        let null = core::ptr::null_mut();
        let Some((index, size)) = Heap::class(layout) else {
            return null;
        };
        let Some(head) = self.free.get_mut(index) else {
            return null;
        };
        if *head != 0 {
            let block = *head;
            // SAFETY: a free block's first word holds the next free block.
            *head = unsafe { *(block as *const usize) };
            return block as *mut u8;
        }
        if self.end == 0 {
            let Some(start) = grow(0, 0) else { return null };
            self.top = start;
            self.end = start;
        }
        let align = size.min(MAX_ALIGN);
        let Some(start) = self.top.checked_add(align - 1).map(|t| t & !(align - 1)) else {
            return null;
        };
        let Some(stop) = start.checked_add(size) else {
            return null;
        };
        if stop > self.end {
            match grow(self.end, stop - self.end) {
                Some(end) if end >= stop => self.end = end,
                _ => return null,
            }
        }
        self.top = stop;
        start as *mut u8
    }

    /// Returns `ptr` (allocated with `layout`) to its class's free list.
    ///
    /// # Safety
    /// `ptr` came from [`Heap::alloc`] on this heap with `layout`.
    pub unsafe fn free(&mut self, ptr: *mut u8, layout: Layout) {
        let Some((index, _)) = Heap::class(layout) else {
            return;
        };
        if let Some(head) = self.free.get_mut(index) {
            // SAFETY: the block is at least 8 bytes and ours again.
            unsafe { *(ptr as *mut usize) = *head };
            *head = ptr as usize;
        }
    }
}

/// Grows wasm memory so that `[at, at + bytes)` exists; the new end.
#[cfg(target_arch = "wasm32")]
fn grow_pages(at: usize, bytes: usize) -> Option<usize> {
    const PAGE: usize = 65536;
    let now = core::arch::wasm32::memory_size(0) * PAGE;
    if at == 0 && bytes == 0 {
        return Some(now);
    }
    let need = (at + bytes).saturating_sub(now);
    let pages = need.div_ceil(PAGE);
    if pages > 0 && core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
        return None;
    }
    Some(now + pages * PAGE)
}

/// The global allocator over one [`Heap`] (the tag is single-threaded).
#[cfg(all(feature = "bare", target_arch = "wasm32"))]
pub struct Global(pub core::cell::UnsafeCell<Heap>);

// SAFETY: wasm32-unknown-unknown without atomics has one thread.
#[cfg(all(feature = "bare", target_arch = "wasm32"))]
unsafe impl Sync for Global {}

#[cfg(all(feature = "bare", target_arch = "wasm32"))]
unsafe impl core::alloc::GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread, and no allocation happens inside alloc.
        unsafe { (*self.0.get()).alloc(layout, grow_pages) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above; `ptr` came from `alloc` with `layout`.
        unsafe { (*self.0.get()).free(ptr, layout) }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
#[allow(clippy::unwrap_used)] // constant layouts in tests
mod tests {
    use super::*;

    /// A heap over a host buffer: `grow` hands out the buffer in steps.
    fn arena() -> (Vec<u8>, usize) {
        let buf = vec![0u8; 1 << 20];
        let base = buf.as_ptr() as usize;
        (buf, base)
    }

    fn alloc(h: &mut Heap, base: usize, size: usize, align: usize) -> *mut u8 {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: the arena outlives the heap in each test.
        unsafe {
            h.alloc(layout, |at, n| {
                if at == 0 && n == 0 {
                    Some((base + 4095) & !4095)
                } else {
                    Some(at + n.max(4096))
                }
            })
        }
    }

    #[test]
    fn blocks_are_aligned_distinct_and_reused_per_class() {
        let (_buf, base) = arena();
        let mut h = Heap::new();
        let a = alloc(&mut h, base, 5, 1);
        let b = alloc(&mut h, base, 24, 8);
        let c = alloc(&mut h, base, 24, 8);
        assert!(!a.is_null() && !b.is_null() && !c.is_null());
        assert_eq!(
            b as usize % 32,
            0,
            "a 24-byte block is a 32-byte class, aligned to 32"
        );
        assert!((c as usize).abs_diff(b as usize) >= 32, "no overlap");
        // SAFETY: b came from this heap with this layout.
        unsafe { h.free(b, Layout::from_size_align(24, 8).unwrap()) };
        let d = alloc(&mut h, base, 30, 16);
        assert_eq!(
            d, b,
            "a freed block serves the next allocation of its class"
        );
        let e = alloc(&mut h, base, 30, 16);
        assert_ne!(e, b);
        // Bounded: a thousand alloc/free pairs reuse one block.
        for _ in 0..1000 {
            let p = alloc(&mut h, base, 100, 4);
            // SAFETY: as above.
            unsafe { h.free(p, Layout::from_size_align(100, 4).unwrap()) };
        }
        let top = h.top;
        let p = alloc(&mut h, base, 100, 4);
        // SAFETY: as above.
        unsafe { h.free(p, Layout::from_size_align(100, 4).unwrap()) };
        assert_eq!(h.top, top, "no growth from reuse");
    }

    #[test]
    fn impossible_layouts_fail_instead_of_corrupting() {
        let (_buf, base) = arena();
        let mut h = Heap::new();
        assert!(
            alloc(&mut h, base, 16, 8192).is_null(),
            "alignment above 4 KB"
        );
        let huge = Layout::from_size_align((1usize << 40) + 1, 1).unwrap();
        // SAFETY: nothing is returned to free.
        assert!(unsafe { h.alloc(huge, |_, _| None) }.is_null());
    }
}
