#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Freed pages go back to the system at once (jemalloc keeps them ten seconds by default):
/// evictions churn through large bodies, and pages kept for reuse would hold the process
/// far above its memory budget (measured: +90 MiB at 256 MiB with a one-second decay). Hits
/// allocate little, so their throughput does not change. `_RJEM_MALLOC_CONF` overrides it.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"dirty_decay_ms:0,muzzy_decay_ms:0\0";

fn main() {
    std::process::exit(rentcache::cli::main());
}
