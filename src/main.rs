//! `containerd-shim-tether-v2`: parse the command line and run one action.

fn main() {
    // The operator's `upgrade` command (and the pre-flight it runs) take their own arguments,
    // not containerd's Go-style flags.
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.first().map(String::as_str) {
        Some("upgrade") => std::process::exit(tether::upgrade::client::main(&argv[1..])),
        Some(tether::upgrade::CHECK_ACTION) => std::process::exit(tether::upgrade::check()),
        _ => {}
    }
    let args = match tether::cli::parse(argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("containerd-shim-tether-v2: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(tether::shim::run(args));
}
