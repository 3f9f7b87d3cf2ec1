# Sourced by the scripts that start containerd and runc: they need root. Run by a user who has
# sudo, the calling script starts again under sudo with the caller's Rust toolchain (sudo's
# secure_path and HOME reset would otherwise hide a rustup install in ~/.cargo).
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo env PATH="$PATH" \
            CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
            "$0" "$@"
    fi
    echo "$(basename "$0"): run as root (it starts containerd and runc; sudo is not installed)" >&2
    exit 1
fi
