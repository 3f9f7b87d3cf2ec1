# Sourced by scripts/containerd-versions.sh and scripts/runc-versions.sh: apt over a private
# sources list (trixie and sid), state and cache dir under $APT_DIR, so newer Debian packages
# can be downloaded without touching the system's apt sources, its package state or anything
# installed. Signatures are checked with Debian 12's own debian-archive-keyring (never
# `trusted=yes`; see containerd-versions.sh for which keys sign trixie and sid).
#
# debian_archive_init NAME  checks root and the keyring (NAME is the caller, for messages),
#                           writes the sources list, sets the array `apt_opts` and updates the
#                           package lists.
# debian_archive_download DIR PKG=VERSION...  downloads those .debs into DIR.

APT_DIR=${TETHER_APT_DIR:-/var/cache/tether/apt}
MIRROR=${TETHER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

debian_archive_init() {
    local name=$1
    if [ "$(id -u)" -ne 0 ]; then
        echo "$name: run as root to fetch Debian packages" >&2
        exit 1
    fi
    if [ ! -s "$KEYRING" ]; then
        echo "$name: $KEYRING missing; install debian-archive-keyring" >&2
        exit 1
    fi
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/empty"
    local sources="$APT_DIR/sources.list"
    {
        echo "deb [signed-by=$KEYRING] $MIRROR trixie main"
        echo "deb [signed-by=$KEYRING] $MIRROR sid main"
    } >"$sources"
    apt_opts=(
        -o "Dir::Etc::sourcelist=$sources"
        -o "Dir::Etc::sourceparts=$APT_DIR/empty"
        -o "Dir::State::Lists=$APT_DIR/lists"
        -o "Dir::Cache=$APT_DIR/cache"
        -o "Dir::Etc::preferences=/dev/null"
        -o "Dir::Etc::preferencesparts=$APT_DIR/empty"
        -o "APT::Architecture=$(dpkg --print-architecture)"
        -o "Acquire::Languages=none"
        -o "APT::Get::List-Cleanup=0"
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    )
    apt-get "${apt_opts[@]}" -q update
}

debian_archive_download() {
    local dir=$1
    shift
    # apt downloads as its sandbox user `_apt`, which must be able to write there.
    if id _apt >/dev/null 2>&1; then chown _apt "$dir"; fi
    (cd "$dir" && apt-get "${apt_opts[@]}" -q download "$@")
}
