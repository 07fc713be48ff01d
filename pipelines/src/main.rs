//! `anning`: see `anning --help` and `shared/contract/cli.md`.

fn main() -> std::process::ExitCode {
    anning_pipelines::cli::main()
}
