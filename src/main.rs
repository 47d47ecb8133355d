/// mimalloc instead of glibc's malloc: glibc returned each request's decode buffers to the
/// kernel and faulted them back in on the next one (~2,700 page faults per 1000×1000 match
/// in the server, 35% of its CPU time in the kernel; see tools/loadgen.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lookalike::cli::main()
}
