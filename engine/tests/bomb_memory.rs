//! A decompression bomb is refused before it is inflated: importing a body
//! under 1 MB that inflates to 512 MiB raises this process's peak heap by
//! less than 64 MiB. Measured with a counting allocator (this test binary's
//! own), not with a clock: the time is printed, never asserted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards the caller's layout to the system allocator.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_512_mib_bomb_is_refused_within_a_small_memory_budget() {
    use chorus_engine::{Engine, EngineConfig, Error, NodeId};
    let engine =
        Engine::in_memory(EngineConfig::new(NodeId::parse("a").expect("id"))).expect("engine");
    let bytes = chorus_engine::room::inflate::bomb(512 << 20);
    assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let err = engine.import_room(&bytes).expect_err("refused");
    let elapsed = started.elapsed();
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "512 MiB bomb ({} KB body) refused in {elapsed:?}; peak heap grew by {} KiB",
        bytes.len() / 1024,
        grew / 1024
    );
    assert!(matches!(err, Error::DecompressedTooLarge { .. }), "{err}");
    assert!(grew < 64 << 20, "peak heap grew by {grew} bytes");
}
