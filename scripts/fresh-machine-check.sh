#!/usr/bin/env bash
# The README's two commands on a fresh machine, in the README's order, in a fresh Debian
# bookworm container:
#   1. a root filesystem from Debian's packages (mmdebstrap --variant=apt) with only what the
#      README's prerequisites name: Debian with Python (python3), plus git (the clone), sudo
#      (the user the scripts install packages as) and ca-certificates; this machine's
#      /usr/local/share/ca-certificates trusted, so the registries behind its TLS proxy are
#      reachable. No compiler, no headers, no pkg-config: those must come from the scripts;
#   2. Rust and Go are the host's, mounted read-only where rustup and Go's tarball put them
#      (~/.rustup with rustup's proxies in ~/.cargo/bin, /usr/local/go); ~/.cargo (crates,
#      `cargo install`) and ~/go stay the container's own;
#   3. this checkout's HEAD cloned there (committed work only) by an ordinary user `dev`
#      with passwordless sudo, who runs `scripts/demo.sh` (its "demo ok" line asserted) and
#      then `scripts/test.sh`, its container and compose checks included (podman inside the
#      container: privileged, its storage on a host directory of this run);
#   4. each command's duration reported; the container, image and directories removed (a
#      failed command's whole output is kept in /var/tmp, its path printed).
#
#   scripts/fresh-machine-check.sh
#
# FRESH_CPUS=1 confines the container to those CPUs (podman --cpuset-cpus), e.g. beside other
# work on a developer's machine; CI leaves it unset and uses them all.
# The inner test.sh runs with GRAPHBRIDGE_TEST_IN_FRESH_MACHINE=1: it must not start this
# check again inside itself. Needs root (rootful, privileged podman; re-runs itself with sudo).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
as_root "$@"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/podman-lib.sh
source scripts/podman-lib.sh
# The host's toolchains: where rustup and Go's tarball install them (HOME is the invoking
# user's, sudo --preserve-env keeps it).
RUSTUP_DIR=${RUSTUP_HOME:-$HOME/.rustup}
RUSTUP_BIN=${CARGO_HOME:-$HOME/.cargo}/bin/rustup
GO_DIR=/usr/local/go
IMAGE=localhost/graphbridge-fresh:$$
NAME=graphbridge-fresh-$$
DEMO_TIMEOUT=${FRESH_DEMO_TIMEOUT:-3600}
TEST_TIMEOUT=${FRESH_TEST_TIMEOUT:-5400}
t0=$SECONDS

step() { echo "== $* ($((SECONDS - t0))s)"; }
die() { echo "fresh-machine-check: $*" >&2; exit 1; }

[ -x "$RUSTUP_BIN" ] || die "no rustup at $RUSTUP_BIN"
[ -d "$RUSTUP_DIR/toolchains" ] || die "no Rust toolchain in $RUSTUP_DIR"
[ -x "$GO_DIR/bin/go" ] || die "no Go at $GO_DIR"
git diff --quiet HEAD || echo "fresh-machine-check: uncommitted changes are not in the clone (HEAD only)" >&2
podman_setup slirp4netns

# On the host's disk, not a tmpfs: the nested podman's storage and the builds grow to several GiB.
WORK=$(mktemp -d /var/tmp/graphbridge-fresh.XXXXXX)
cleanup() {
  podman rm -f --time 5 "$NAME" >/dev/null 2>&1 || true
  podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
  # The nested podman's overlay layers are plain directories once its container is gone.
  rm -rf "$WORK"
}
trap cleanup EXIT

step "root filesystem: Debian bookworm, python3, git, sudo, ca-certificates (mmdebstrap)"
trust=()
cas=(/usr/local/share/ca-certificates/*.crt)
[ ! -e "${cas[0]}" ] || trust=(--customize-hook="copy-in ${cas[*]} /usr/local/share/ca-certificates/")
# The user dev: sudo without a password (as the Debian installer sets up a user when root
# gets no password); rustup's proxies in ~/.cargo/bin, the rustup binary itself mounted over
# the placeholder. No systemd runs in the container: the nested podman manages cgroups itself
# and logs events to a file. ($1 in the hooks is mmdebstrap's: the root filesystem.)
# shellcheck disable=SC2016
debian_image "$IMAGE" --include=ca-certificates,git,python3,sudo \
  "${trust[@]}" \
  --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
  --customize-hook='chroot "$1" useradd --create-home --shell /bin/bash --groups sudo dev' \
  --customize-hook='echo "dev ALL=(ALL) NOPASSWD: ALL" >"$1/etc/sudoers.d/dev"' \
  --customize-hook='chroot "$1" su dev -c "mkdir -p ~/.cargo/bin ~/.rustup && cd ~/.cargo/bin && touch rustup && for p in cargo rustc rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver; do ln -s rustup \$p; done"' \
  --customize-hook='mkdir -p "$1/etc/containers" && printf "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n" >"$1/etc/containers/containers.conf"'

step "the container: $IMAGE, Rust and Go read-only, this checkout's HEAD"
git bundle create --quiet "$WORK/graphbridge.bundle" HEAD
mkdir -p "$WORK/containers"
cpus=()
[ -z "${FRESH_CPUS:-}" ] || cpus=(--cpuset-cpus "$FRESH_CPUS")
# Its own user-mode network (slirp4netns): the podman inside puts its bridge on 10.88.0.0/16,
# which on podman's default network would clash with the container's own address and route.
# catatonit as PID 1 reaps what the brokers and tests leave behind.
podman run --detach --name "$NAME" --init --privileged --network slirp4netns "${cpus[@]}" \
  -v "$RUSTUP_DIR:/home/dev/.rustup:ro" -v "$RUSTUP_BIN:/home/dev/.cargo/bin/rustup:ro" \
  -v "$GO_DIR:/usr/local/go:ro" -v "$WORK/graphbridge.bundle:/tmp/graphbridge.bundle:ro" \
  -v "$WORK/containers:/var/lib/containers" \
  "$IMAGE" sleep infinity >/dev/null
podman exec --user dev --workdir /home/dev --env HOME=/home/dev "$NAME" \
  git clone --quiet -c advice.detachedHead=false /tmp/graphbridge.bundle graphbridge

# readme_command LOG SUCCESS-LINE TIMEOUT COMMAND [VAR=VALUE...]: COMMAND as dev in the clone,
# bounded, PATH as dev's login shell has it after rustup's and Go's installers; its output to
# LOG, its step lines here. Fails unless COMMAND succeeds and LOG has SUCCESS-LINE; then LOG is
# kept beside $WORK (which goes) and its tail shown.
readme_command() {
  local log=$1 success=$2 limit=$3 command=$4 start=$SECONDS var
  shift 4
  local env=(--env HOME=/home/dev --env PATH=/home/dev/.cargo/bin:/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin)
  for var in "$@"; do env+=(--env "$var"); done
  step "$command"
  if ! podman exec --user dev --workdir /home/dev/graphbridge "${env[@]}" "$NAME" \
    timeout --kill-after 30 "$limit" "$command" 2>&1 | tee "$log" | { grep --line-buffered -E '^(== |setup.sh: )' || true; } ||
    ! grep -q "$success" "$log"; then
    tail -40 "$log"
    cp "$log" "$WORK.${log##*/}"
    die "$command failed on the fresh machine; its whole output: $WORK.${log##*/}"
  fi
  grep "$success" "$log"
  took+=("$command $(((SECONDS - start) / 60))m$(((SECONDS - start) % 60))s")
}
took=()
readme_command "$WORK/demo.txt" "^demo ok" "$DEMO_TIMEOUT" scripts/demo.sh
readme_command "$WORK/test.txt" "^== test.sh: every check passed" "$TEST_TIMEOUT" scripts/test.sh \
  GRAPHBRIDGE_TEST_IN_FRESH_MACHINE=1

step "fresh machine check passed: ${took[0]}, ${took[1]}"
