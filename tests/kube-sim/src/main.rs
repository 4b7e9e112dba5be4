//! The `kube-sim` binary.
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Built-in container images re-exec this binary (see kube_sim::runtime).
    if args.get(1).map(String::as_str) == Some(kube_sim::runtime::CONTAINER_SUBCOMMAND) {
        return kube_sim::runtime::container_main(args);
    }
    std::process::ExitCode::SUCCESS
}
