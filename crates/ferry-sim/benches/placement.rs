//! `cargo bench -p ferry-sim`: prints the speed and scale figures, with heap measured by a
//! counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn heap() -> usize {
    ALLOCATED.load(Ordering::Relaxed)
}

fn main() {
    let dir = match ferry_sim::trace::find_trace_dir(None) {
        Ok(d) => d,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let mut out = std::io::stdout();
    if let Err(e) =
        ferry_sim::bench::run_benchmarks_with(&dir, 10_000, 90.0, 3, Some(heap), &mut out)
    {
        eprintln!("benchmark failed: {e:#}");
        std::process::exit(1);
    }
}
