//! `tether-install`: puts containerd-shim-tether-v2 on a node and a runtime handler in
//! containerd's config, or takes them off again (`src/install/`).
//!
//!   tether-install install [-config F] [-bin-dir D] [-handler N] [-options-file F]
//!                          [-config-version 2|3] [-containerd BIN] [-shim BIN]
//!   tether-install uninstall [-config F] [-bin-dir D]
//!   tether-install -v

use tether::install::{self, InstallError};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (action, rest) = argv
        .split_first()
        .map_or(("", &[][..]), |(a, r)| (a.as_str(), r));
    let result = match action {
        "install" => install::parse_options(rest).and_then(|o| install::install(&o)),
        "uninstall" => install::parse_options(rest).and_then(|o| install::uninstall(&o)),
        "-v" | "--version" | "-version" => {
            print!(
                "{}",
                tether::version::text().replacen(
                    "containerd-shim-tether-v2:",
                    "tether-install (for containerd-shim-tether-v2):",
                    1,
                )
            );
            Ok(())
        }
        _ => Err(InstallError::Usage(
            "usage: tether-install install|uninstall [-config /etc/containerd/config.toml] \
             [-bin-dir /usr/local/bin] [-handler tether] [-options-file F] \
             [-config-version 2|3] [-containerd BIN] [-shim BIN]"
                .into(),
        )),
    };
    if let Err(e) = result {
        eprintln!("tether-install: {e}");
        std::process::exit(if matches!(e, InstallError::Usage(_)) {
            2
        } else {
            1
        });
    }
}
