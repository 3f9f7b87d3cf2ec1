#!/usr/bin/env bash
# Benchmark: the release tether shim against containerd's Go shim (containerd-shim-runc-v2),
# in one run, interleaved, against one private containerd (temp dir, CRI disabled) that the
# benchmark starts and removes. Prints a Markdown table with both figures and tether/Go.
#
#   scripts/bench.sh                        # full run, several minutes (as root; sudo if needed)
#   scripts/bench.sh --quick                # smoke check, about a minute
#   scripts/bench.sh --only density         # density: 100, 300 and 1,000 pods per shim (~30 min)
#   scripts/bench.sh --quick --only density # density at 100 pods only (~3 min)
#
# Extra arguments go to the benchmark (examples/bench/), e.g. `--only lifecycle,exec` or
# `--density-n 100,500`. The results (header and Markdown tables) are also written to
# target/<triple>/bench/results.md, or to the file given with `--out`.
set -euo pipefail

. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

# Installs containerd, runc and busybox-static if missing (quiet when all are there).
scripts/setup.sh

# Always measure what the sources say now. A build of its own: building the shim together
# with the example would unify dev-dependency features into it, and the shim measured must be
# exactly the one `cargo build --release` installs. (`cargo run --example` does not touch it.)
echo "+ cargo build --release"
cargo build --release

echo "+ cargo run --release --example bench -- $*"
exec cargo run --release --example bench -- "$@"
