#!/usr/bin/env bash
# Build the harfanglab-intel container image without pulling anything: a fully static binary
# from this machine's Rust toolchain, then a `FROM scratch` image (scripts/Containerfile) with
# podman or docker, whichever works here. Prints the image reference and its size.
#
#   scripts/build-image.sh [--tag REF] [--export DIR]
#
#   --tag REF     image reference (default: localhost/harfanglab-intel:<crate version>)
#   --export DIR  also write the image's root filesystem to DIR and its configuration (the
#                 engine's `image inspect` JSON) to DIR.json; scripts/test-image.sh uses this
#
# The binary is glibc linked statically (`+crt-static`): the musl target needs a toolchain
# download these machines cannot make. Host names still resolve inside an empty root because
# glibc >= 2.34 builds its `files` and `dns` NSS services into libc.a (nothing is dlopened for
# /etc/hosts or /etc/resolv.conf); the check below refuses an older glibc. TLS roots are
# compiled in (webpki-roots) and log timestamps are UTC, so no CA store or tz database is needed
# at run time. The multi-stage Dockerfile is the other way to the same image layout.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-image: $*" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
tag="localhost/harfanglab-intel:${version}"
export_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag=${2:?--tag needs a value}; shift 2 ;;
        --export) export_dir=${2:?--export needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

# ---- engine: podman first (daemonless, what these machines install); docker only if its daemon
# answers (a docker CLI without an engine is common) ----------------------------------------
if command -v podman >/dev/null 2>&1; then
    engine=podman
    # OCI image configs have no HEALTHCHECK: podman drops it unless the docker format is asked.
    engine_build=(podman build --format docker)
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
    engine_build=(docker build)
else
    die "neither podman nor a running docker engine found (Debian: apt-get install podman)"
fi

# ---- static binary ----------------------------------------------------------------------
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
    *-linux-gnu) ;;
    *) die "host $host: this script builds a static glibc binary and needs a *-linux-gnu toolchain" ;;
esac
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
[ -n "$glibc" ] || die "cannot read the glibc version (getconf GNU_LIBC_VERSION)"
if [ "$(printf '%s\n2.34\n' "$glibc" | sort -V | head -n1)" != 2.34 ]; then
    die "glibc $glibc < 2.34: a static binary would need NSS modules at run time to resolve host names"
fi
[ -f /etc/ssl/certs/ca-certificates.crt ] || die "no /etc/ssl/certs/ca-certificates.crt (Debian: apt-get install ca-certificates)"

# --target keeps RUSTFLAGS off build scripts and proc-macros (which must stay dynamic) and puts
# the static build in its own directory beside the normal one. Symbols are stripped here only:
# the release profile keeps them for profiling.
echo "build-image: cargo build --release --target $host (static)" >&2
build_start=$(date +%s)
CARGO_PROFILE_RELEASE_STRIP=symbols RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$host" --bin harfanglab-intel
echo "build-image: binary built in $(( $(date +%s) - build_start )) s" >&2
bin="target/$host/release/harfanglab-intel"
if readelf -lW "$bin" | grep -q 'program interpreter'; then
    die "$bin is dynamically linked (it names a program interpreter)"
fi
if readelf -dW "$bin" | grep -q '(NEEDED)'; then
    die "$bin needs shared libraries: $(readelf -dW "$bin" | grep '(NEEDED)')"
fi
command -v file >/dev/null 2>&1 && echo "build-image: $(file -b "$bin")" >&2

# ---- build context: exactly what the image holds ----------------------------------------
ctx="target/image-context"
rm -rf "$ctx"
mkdir -p "$ctx/state"
cp "$bin" "$ctx/harfanglab-intel"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
# `scratch` has no /etc/passwd: name the runtime user (65532 = "nonroot", as in distroless).
echo 'nonroot:x:65532:65532:harfanglab-intel:/var/lib/harfanglab-intel:/sbin/nologin' > "$ctx/passwd"
echo 'nonroot:x:65532:' > "$ctx/group"

revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "build-image: $engine build -t $tag" >&2
"${engine_build[@]}" --quiet -f scripts/Containerfile -t "$tag" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
    "$ctx" >/dev/null

size=$("$engine" image inspect --format '{{.Size}}' "$tag")
echo "image $tag"
echo "size  $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB, uncompressed)"

if [ -n "$export_dir" ]; then
    rm -rf "$export_dir" "$export_dir.json"
    mkdir -p "$export_dir"
    # `podman run` may be refused in a sandbox; create + export needs no running container.
    cid=$("$engine" create "$tag")
    trap '"$engine" rm -f "$cid" >/dev/null 2>&1 || true' EXIT
    "$engine" export "$cid" | tar -x -C "$export_dir" --numeric-owner
    "$engine" image inspect "$tag" > "$export_dir.json"
    echo "rootfs $export_dir (configuration in $export_dir.json)"
fi
