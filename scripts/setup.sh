#!/usr/bin/env bash
# Installs what building and testing graphbridge needs on a Debian machine, only what is
# missing: C toolchain and headers for librdkafka (built from source by rdkafka's cmake-build),
# Java + Maven for Kafka (its jars come from Maven Central, see kafka.sh), nats-server,
# and ShellCheck for the chart check. Go (>= 1.24, for helm/kubeconform in chart-check.sh) and
# python3 come with the machine. Arguments name further commands a caller needs (a Debian
# package of the same name is installed when the command is missing), e.g. `setup.sh valgrind`.
set -euo pipefail

need_pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have_cmd cc || need_pkgs+=(build-essential)
have_cmd cmake || need_pkgs+=(cmake)
have_cmd curl || need_pkgs+=(curl)
for p in libssl-dev libcurl4-openssl-dev zlib1g-dev pkg-config; do
  have_pkg "$p" || need_pkgs+=("$p")
done
have_cmd java || need_pkgs+=(default-jdk-headless)
have_cmd mvn || need_pkgs+=(maven)
have_cmd nats-server || need_pkgs+=(nats-server)
have_cmd shellcheck || need_pkgs+=(shellcheck)
for extra in "$@"; do
  have_cmd "$extra" || need_pkgs+=("$extra")
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
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  echo "setup.sh: go not found; scripts/chart-check.sh builds helm and kubeconform with it" >&2
  exit 1
fi
