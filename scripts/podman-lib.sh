# shellcheck shell=bash
# Rootful podman on this machine class, shared by container-check.sh and compose-check.sh
# (sourced, not run): the packages, the machine's containers.conf, and Debian base images made
# from Debian's packages (this machine reaches Debian's archive but no container registry).

# Explicit for podman's own commands; podman-compose's get it from containers.conf.
podman() { command podman --runtime runc "$@"; }

# podman_setup [CMD...]: installs Debian's podman, runc, catatonit and mmdebstrap (and a package
# for each CMD) when missing, and sets in /etc/containers/containers.conf what this machine
# class needs, unless that file already sets it:
#   [engine] runtime = "runc"            crun fails here ("cgroups in hybrid mode not supported")
#   [containers] default_ulimits = []    setting RLIMIT_NPROC is not permitted here
# Also netavark and aardvark-dns, podman's network stack with its DNS, and iptables, which
# netavark needs: Debian's podman only recommends them, so an install without recommends (as
# setup.sh's) gets the CNI plugins instead, where containers cannot resolve each other's names
# (Debian's CNI has no dnsname plugin): compose-check's services find each other by name. They
# come with podman in one install: podman picks its network backend the first time it runs and
# keeps it (netavark when it is installed then and no CNI network exists).
podman_setup() {
  "$(dirname "${BASH_SOURCE[0]}")/setup.sh" podman runc catatonit mmdebstrap netavark aardvark-dns iptables "$@"
  python3 - /etc/containers/containers.conf <<'PY'
import os, re, sys, tomllib
path = sys.argv[1]
text = open(path).read() if os.path.exists(path) else ""
before = text
for table, key, value in (("engine", "runtime", '"runc"'), ("containers", "default_ulimits", "[]")):
    if key in tomllib.loads(text).get(table, {}):
        continue
    header = re.search(rf"^\[{table}\][ \t]*(#.*)?\n", text, re.M)
    if header:
        text = f"{text[:header.end()]}{key} = {value}\n{text[header.end():]}"
    else:
        text += ("\n" if text and not text.endswith("\n") else "") + f"[{table}]\n{key} = {value}\n"
tomllib.loads(text)
if text != before:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(f"podman_setup: {path} now sets runc and no default ulimits", file=sys.stderr)
PY
}

# debian_base IMAGE PACKAGES: IMAGE (localhost/NAME:TAG) from `mmdebstrap --variant=apt bookworm`
# with PACKAGES (comma-separated) preinstalled, imported with podman (about 20 s). An IMAGE made
# from the same PACKAGES less than a week ago is reused (the layers built on it stay cached);
# older, it is made again so that Debian's security updates come in.
debian_base() {
  local image=$1 packages=$2 made rootfs
  made=$(podman image inspect --format '{{index .Labels "dev.graphbridge.packages"}} {{.Created.Unix}}' \
    "$image" 2>/dev/null || true)
  if [ -n "$made" ] && [ "${made% *}" = "$packages" ] && (($(date +%s) - ${made##* } < 7 * 86400)); then
    echo "reusing $image (made $(date -d "@${made##* }" -Iminutes))"
    return 0
  fi
  debian_image "$image" --change "LABEL dev.graphbridge.packages=$packages" --include="$packages"
  echo "made $image from Debian bookworm's packages"
}

# debian_image IMAGE [--change INSTRUCTION] [MMDEBSTRAP-ARGS...]: IMAGE from Debian bookworm's
# packages, no registry: mmdebstrap --variant=apt into a temporary tar, then podman import
# (with the Containerfile INSTRUCTION given by --change, if any).
debian_image() {
  local image=$1 rootfs change=()
  shift
  if [ "${1:-}" = --change ]; then
    change=(--change "$2")
    shift 2
  fi
  rootfs=$(mktemp --suffix=.tar /var/tmp/graphbridge-rootfs.XXXXXX)
  mmdebstrap --quiet --variant=apt "$@" bookworm "$rootfs"
  podman import --quiet "${change[@]}" "$rootfs" "$image" >/dev/null
  rm -f "$rootfs"
}

# The base of the graphbridge images (RUNTIME_BASE) and of the broker stand-ins: what the
# Dockerfile's runtime stage installs (ca-certificates, libssl3) preinstalled, passwd for useradd.
GRAPHBRIDGE_BASE=localhost/graphbridge-base:bookworm
graphbridge_base() { debian_base "$GRAPHBRIDGE_BASE" ca-certificates,libssl3,passwd; }
