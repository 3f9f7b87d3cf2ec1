#!/bin/sh
# The installer image's entrypoint (deploy/daemonset.yaml): runs
# `tether-install install` (or `uninstall`, as the first argument says) against
# the host's /etc/containerd and bin dir, mounted under /host, then restarts the host's
# containerd in the host's namespaces (hostPID, privileged) if the config changed, as
# kata-deploy does. Then it sleeps, so the DaemonSet's pod stays Running.
#
# Environment: CONTAINERD_CONFIG (default /host/etc/containerd/config.toml), BIN_DIR
# (/host/usr/local/bin), CONFIG_VERSION (2 or 3, for an empty config), RESTART (1; 0 skips
# the restart, for tests), SLEEP (1; 0 exits after the work, for tests).
set -eu

action=${1:-install}
config=${CONTAINERD_CONFIG:-/host/etc/containerd/config.toml}
bin_dir=${BIN_DIR:-/host/usr/local/bin}

before=$(sha256sum "$config" 2>/dev/null || echo none)
set -- -config "$config" -bin-dir "$bin_dir"
[ -z "${CONFIG_VERSION:-}" ] || set -- "$@" -config-version "$CONFIG_VERSION"
/tether-install "$action" "$@" -shim /containerd-shim-tether-v2
after=$(sha256sum "$config" 2>/dev/null || echo none)

if [ "$before" != "$after" ] && [ "${RESTART:-1}" = 1 ]; then
    echo "tether-installer: $config changed; restarting containerd on the host"
    nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd
fi
echo "tether-installer: $action done"
if [ "${SLEEP:-1}" = 1 ]; then
    exec sleep 2147483647
fi
