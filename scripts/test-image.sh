#!/usr/bin/env bash
# Build the container image (scripts/build-image.sh), export its root filesystem and run the
# connector from it under chroot against the simulators (tests/container_image.rs), in a fresh
# network namespace so the runtime-style DNS server at 127.0.0.11:53 is ours. Called by .ci/run
# after `cargo test`; needs root.
#
# podman, socat, openssl (and ip, unshare) are installed with apt-get when missing. Only when that install is
# impossible (no apt-get, or it fails) is the test skipped, with a notice; any later failure
# fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
    echo "" >&2
    echo "######################################################################" >&2
    echo "# NOTICE: container image test SKIPPED: $*" >&2
    echo "######################################################################" >&2
    exit 0
}

[ "$(id -u)" = 0 ] || skip "not root (chroot and a network namespace need it)"

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || skip "${missing[*]} missing and no apt-get to install them"
    echo "test-image: apt-get install ${missing[*]}" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
        skip "apt-get install ${missing[*]} failed"
    fi
fi

start=$(date +%s)
rootfs="target/image-rootfs"
scripts/build-image.sh --tag localhost/harfanglab-intel:test --export "$rootfs"
built=$(date +%s)

# Build the test outside the namespace (no network inside), then run it inside.
cargo test --locked --test tests --no-run
HLI_IMAGE_ROOTFS="$PWD/$rootfs" HLI_IMAGE_CONFIG="$PWD/$rootfs.json" \
    unshare --net -- sh -c 'ip link set lo up && exec cargo test --offline --locked --test tests container_image:: -- --ignored'
echo "test-image: image built in $((built - start)) s, tested in $(( $(date +%s) - built )) s" >&2
