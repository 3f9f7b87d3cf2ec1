#!/usr/bin/env bash
# Validates deploy/'s Kubernetes manifests (and the RuntimeClass `tether-install` prints) against
# the Kubernetes OpenAPI schemas, offline: kubernetes-validate (PyPI) ships the JSON schemas
# of every Kubernetes release inside the package, so once installed it needs no network
# and no cluster (kubectl --dry-run needs an API server; kubeconform downloads schemas at
# run time). --strict also rejects fields the schema does not know (a typo'd key).
# Installs it into a venv under /var/cache/tether/kubernetes-validate when missing.
# A deliberately broken manifest must be rejected too, so the check is known to bite.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${TETHER_KV_VENV:-/var/cache/tether/kubernetes-validate}
KV_VERSION=1.37.0
K8S=${TETHER_K8S_VERSION:-1.33.0}

if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KV_VERSION"; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        echo "+ apt-get install python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "check.sh: installing kubernetes-validate $KV_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "kubernetes-validate==$KV_VERSION"
fi
kv() { "$VENV/bin/kubernetes-validate" --strict -k "$K8S" "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
files=(deploy/daemonset.yaml deploy/runtimeclass.yaml)
# What `tether-install install` prints (src/install/mod.rs runtime_class).
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release/tether-install
if [ -x "$bin" ]; then
    mkdir -p "$work/etc"
    "$bin" install -config "$work/etc/config.toml" -bin-dir "$work/bin" -config-version 2 \
        >"$work/printed.yaml" 2>/dev/null
    files+=("$work/printed.yaml")
fi
echo "+ kubernetes-validate --strict -k $K8S ${files[*]}"
kv "${files[@]}"

# The check must fail on a bad manifest: an unknown field and a wrong type.
sed -e 's/hostPID: true/hostPID: "yes"/' -e 's/^spec:/spec:\n  replicas: 3/' \
    deploy/daemonset.yaml >"$work/broken.yaml"
if kv --quiet "$work/broken.yaml" >/dev/null 2>&1; then
    echo "check.sh: kubernetes-validate accepted a broken DaemonSet" >&2
    exit 1
fi
echo "check.sh: manifests valid for Kubernetes $K8S; a broken one is rejected"
