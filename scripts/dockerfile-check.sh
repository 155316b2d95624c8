#!/usr/bin/env bash
# Checks the Dockerfile against what CI actually builds and runs, without a Docker engine:
#   - the builder installs every build package scripts/setup.sh installs and runs the release
#     build with --locked, for the binary Cargo.toml declares;
#   - the runtime stage installs a Debian package for every shared library the binary links
#     (ldd on the binary CI built, same Debian release), beyond those in debian-slim itself;
#   - every package the Dockerfile pins exists in Debian (apt-cache), when apt lists are present;
#   - non-root numeric USER, ENTRYPOINT is the copied binary, no HEALTHCHECK, OCI labels.
# usage: dockerfile-check.sh [BINARY]   (default target/debug/graphbridge)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BINARY=${1:-target/debug/graphbridge}
DF=Dockerfile
fail=0
bad() { echo "dockerfile-check: $*" >&2; fail=1; }

# Stage text by name (continuation lines joined): builder, prebuilt (CI's binary), binary
# (whichever of the two BINARY_FROM names), runtime.
joined=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$DF")
stage() { awk -v s="$1" '/^FROM /{f = ($NF == s)} f' <<<"$joined"; }
builder=$(stage builder)
runtime=$(stage runtime)
[ "$(grep '^FROM ' <<<"$joined" | awk '{print $NF}' | paste -sd ' ')" = "builder prebuilt binary runtime" ] ||
  bad "expected the stages builder, prebuilt, binary, runtime"
grep -qx 'ARG BINARY_FROM=builder' <<<"$joined" || bad "the binary must default to the builder's: ARG BINARY_FROM=builder"

pkgs_of() { grep -o 'apt-get install[^&]*' <<<"$1" | tr ' ' '\n' | grep -v '^-' | grep -v -e '^apt-get$' -e '^install$' -e '^$' | sed 's/=.*//' | sort -u; }
builder_pkgs=$(pkgs_of "$builder")
runtime_pkgs=$(pkgs_of "$runtime")

# Build packages from setup.sh (the toolchain is the rust image's).
for p in cmake libssl-dev libcurl4-openssl-dev zlib1g-dev pkg-config; do
  grep -q "$p" scripts/setup.sh || bad "setup.sh no longer installs $p: update this list"
  grep -qx "$p" <<<"$builder_pkgs" || bad "builder stage does not install $p (setup.sh does)"
done
bin_name=$(awk '/^\[\[bin\]\]/{f=1} f && /^name *=/{gsub(/"/,"",$3); print $3; exit}' Cargo.toml)
grep -qx 'ARG FEATURES=production' <<<"$builder" || bad "builder must default to the production feature set: ARG FEATURES=production"
grep -q "cargo build --release --locked --no-default-features --features \"\$FEATURES\" --bin $bin_name" <<<"$builder" || bad "builder must run cargo build --release --locked --no-default-features --features \"\$FEATURES\" --bin $bin_name"

# Shared libraries the binary needs, and the Debian packages providing them on this machine.
if [ -x "$BINARY" ] && command -v ldd >/dev/null && command -v dpkg >/dev/null; then
  # Present in debian:bookworm-slim (Essential/Required packages and apt's dependencies).
  base="libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 liblzma5 libbz2-1.0 libcrypt1 libselinux1 libpcre2-8-0 libgmp10 libacl1 libattr1 libudev1 libsystemd0 libcap2 libgcrypt20 libgpg-error0 liblz4-1 libxxhash0 libtinfo6 libmd0 libseccomp2 libaudit1 libaudit-common libdb5.3"
  while read -r lib path; do
    [ -n "$path" ] || continue
    pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1 || true)
    [ -n "$pkg" ] || pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1 || true)
    [ -n "$pkg" ] || { bad "$lib ($path) belongs to no Debian package"; continue; }
    if grep -qw "$pkg" <<<"$base" || grep -qx "$pkg" <<<"$runtime_pkgs"; then
      echo "ok: $lib from $pkg"
    else
      bad "the binary links $lib from $pkg, which the runtime stage does not install"
    fi
  done < <(ldd "$BINARY" | awk '/=>/ {print $1, $3}')
else
  bad "cannot inspect $BINARY (need the binary, ldd and dpkg)"
fi

# Pinned packages must exist in this Debian release (only when apt lists are present).
lists=(/var/lib/apt/lists/*_Packages*)
if command -v apt-cache >/dev/null && [ -e "${lists[0]}" ]; then
  # Each pin (pkg=glob) must match the version this release offers, or apt-get fails in the build.
  for pin in $(grep -o 'apt-get install[^&]*' <<<"$joined" | tr ' ' '\n' | grep '='); do
    p=${pin%%=*} want=${pin#*=}
    have=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
    # shellcheck disable=SC2053 # $want is a glob on purpose
    if [[ -n $have && $have == $want ]]; then echo "ok: Debian has $p $have (pin $want)"; else bad "pin $pin does not match Debian's $p '${have:-none}'"; fi
  done
fi

user=$(grep '^USER ' <<<"$runtime" | tail -1 | awk '{print $2}')
[[ ${user%%:*} =~ ^[1-9][0-9]*$ ]] || bad "runtime USER must be a non-zero numeric uid (runAsNonRoot), got '$user'"
grep -q '^HEALTHCHECK' <<<"$joined" && bad "no HEALTHCHECK: Kubernetes probes the admin port"
entry=$(grep '^ENTRYPOINT' <<<"$runtime" | sed -E 's/ENTRYPOINT \["([^"]+)".*/\1/')
grep -q "^COPY --from=binary .* $entry\$" <<<"$runtime" || bad "ENTRYPOINT $entry is not the binary copied from the binary stage"
for l in title description licenses version revision source; do
  grep -q "org.opencontainers.image.$l=" <<<"$runtime" || bad "missing OCI label org.opencontainers.image.$l"
done

[ "$fail" = 0 ] || exit 1
echo "ok: Dockerfile matches the build and the binary's runtime needs"
