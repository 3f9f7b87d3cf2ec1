//! `containerd-shim-tether-v2`: parse the command line and run one action.

fn main() {
    let args = match tether::cli::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("containerd-shim-tether-v2: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(tether::shim::run(args));
}
