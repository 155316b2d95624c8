#!/usr/bin/env bash
# Installs what building and testing graphbridge needs on a Debian machine, only what is
# missing: C toolchain and headers for librdkafka (built from source by rdkafka's cmake-build)
# and OpenSSL (openssl-sys, found with pkg-config), Java + Maven for Kafka (its jars come from
# Maven Central, see kafka.sh), nats-server, ShellCheck and python3-venv (hadolint's virtual
# environment) for the chart check, python3-yaml for the container check. Go (>= 1.24, for
# helm/kubeconform in chart-check.sh) and python3 come with the machine.
#
#   scripts/setup.sh --build   # only what `cargo build` needs (scripts/demo.sh)
#   scripts/setup.sh [CMD...]  # everything the tests need, and a Debian package for each CMD
#                              # that is missing (e.g. `setup.sh valgrind`); a CMD may also
#                              # name a package without a command on PATH (aardvark-dns)
set -euo pipefail
# Debian puts some of these in /usr/sbin (nats-server), which an ordinary user's PATH leaves out.
PATH=$PATH:/usr/sbin

need_pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

build_only=false
if [ "${1:-}" = --build ]; then
  build_only=true
  shift
fi

have_cmd cc || need_pkgs+=(build-essential)
have_cmd cmake || need_pkgs+=(cmake)
have_cmd curl || need_pkgs+=(curl)
for p in libssl-dev libcurl4-openssl-dev zlib1g-dev pkg-config; do
  have_pkg "$p" || need_pkgs+=("$p")
done
if ! $build_only; then
  have_cmd java || need_pkgs+=(default-jdk-headless)
  have_cmd mvn || need_pkgs+=(maven)
  have_cmd nats-server || need_pkgs+=(nats-server)
  have_cmd shellcheck || need_pkgs+=(shellcheck)
  have_cmd openssl || need_pkgs+=(openssl)
  # Debian's python3 lacks ensurepip; hadolint's venv (chart-check.sh) needs it.
  python3 -c 'import ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
  # container-check.sh reads and writes the chart's manifests with PyYAML.
  python3 -c 'import yaml' >/dev/null 2>&1 || need_pkgs+=(python3-yaml)
fi
for extra in "$@"; do
  have_cmd "$extra" || have_pkg "$extra" || need_pkgs+=("$extra")
done

if ((${#need_pkgs[@]})); then
  echo "setup.sh: installing ${need_pkgs[*]}" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! have_cmd cargo; then
  echo "setup.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
$build_only && exit 0
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  echo "setup.sh: go not found; scripts/chart-check.sh builds helm and kubeconform with it" >&2
  exit 1
fi
