fn main() -> std::process::ExitCode {
    lookalike::cli::main()
}
