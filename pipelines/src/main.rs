//! `anning`: see `anning --help` and `shared/contract/cli.md`.

/// mimalloc: the engine makes and drops many small allocations (see `benches/README.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    anning_pipelines::cli::main()
}
