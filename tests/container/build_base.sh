#!/usr/bin/env bash
# Builds the local stand-in for the CUDA base image (pytorch/pytorch:*-runtime) that the container tests build the
# real Dockerfile on. No registry is reachable from CI, so the base comes from Debian's own packages:
#   debootstrap --variant=minbase from the mirror apt uses here  ->  `docker import`.
# It reproduces what breaks real first jobs: Python lives in /opt/conda (a venv of Debian's python3, the system
# copy removed), on PATH only through the image's ENV, exactly like /opt/conda/bin in the PyTorch images; torch is
# pre-installed (the CPU wheel), as the PyTorch base has it. openssh-server is there too, with no keys and not
# running: it stands for the sshd that Vast's own start-up injects into any image (and that runpod/pytorch images
# ship), so this base also serves as the providers' "stock" PyTorch image in the stock-path tests.
# This machine's pip settings and CA bundle (and the torch wheel under find-links) go into THIS base image, so pip
# inside `docker build` reaches the package index the way it does on the host; the Dockerfile itself carries none.
#
# Cached: the image is tagged with a hash of this script and the pip settings, so it is built once per machine.
# Prints the image tag on stdout (the last line). Used by tests/container/ and .ci/run.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SUITE="${LORARUN_BASE_SUITE:-bookworm}"

mirror() {  # the Debian mirror apt is configured with (deb822 .sources first, then the one-line format)
  local m
  m="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)"
  [ -n "$m" ] || m="$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -1 || true)"
  printf '%s' "${m:-http://deb.debian.org/debian}"
}

pip_files() {  # the host's pip configuration files that exist, in pip's own precedence order (later wins)
  for f in /etc/xdg/pip/pip.conf /etc/pip.conf "$HOME/.pip/pip.conf" "$HOME/.config/pip/pip.conf"; do
    [ -f "$f" ] && printf '%s\n' "$f"
  done
  return 0
}

CA_BUNDLE="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
KEY="$( { cat "$0"; pip_files | xargs -r cat; [ -f /etc/xdg/pip/constraints.txt ] && cat /etc/xdg/pip/constraints.txt;
          env | grep -E '^PIP_' | sort; ls /opt/wheels 2>/dev/null; echo "$SUITE $(mirror)"; } | sha256sum | cut -c1-12)"
TAG="lorarun-test-base:${KEY}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "$TAG"; exit 0
fi

command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 2; }
WORK="$(mktemp -d /var/tmp/lorarun-base.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"
echo "building $TAG from $(mirror) ($SUITE) in $WORK" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,openssh-server "$SUITE" "$ROOT" "$(mirror)" >&2

# Python the PyTorch-image way: /opt/conda/bin, not on the default PATH. --copies so the venv does not point at
# /usr/bin/python3, which is then removed: a session without the image's ENV finds no python3 at all.
in_root() {  # a command inside the new root, with none of this machine's environment (PIP_CERT etc. would win)
  env -i PATH=/opt/conda/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot "$ROOT" "$@"
}
in_root /usr/bin/python3 -m venv --copies /opt/conda >&2
rm -f "$ROOT"/usr/bin/python3 "$ROOT"/usr/bin/python3.* "$ROOT"/usr/bin/python "$ROOT"/usr/local/bin/python*

# The host's pip settings, merged into the image's global pip.conf (pip reads /etc/pip.conf); file:// indexes of
# the host are left out (they are not inside the image), find-links wheels are copied in.
mkdir -p "$ROOT/etc/xdg/pip" "$ROOT/opt/wheels"
cp "$CA_BUNDLE" "$ROOT/etc/ssl/certs/lorarun-host-ca.crt"
[ -f /etc/xdg/pip/constraints.txt ] && cp /etc/xdg/pip/constraints.txt "$ROOT/etc/xdg/pip/constraints.txt"
if [ -d /opt/wheels ]; then cp -a /opt/wheels/. "$ROOT/opt/wheels/"; fi
python3 "$HERE/merge_pip_conf.py" "$ROOT" $(pip_files) > "$ROOT/etc/pip.conf"
echo "pip.conf in the base:" >&2; cat "$ROOT/etc/pip.conf" >&2

# torch pre-installed, as in the PyTorch base: the CPU wheel from find-links when there is one (the index would
# offer the multi-GB CUDA build), the index otherwise.
wheel="$(ls "$ROOT"/opt/wheels/ 2>/dev/null | grep -E '^torch-[^-]+-' | head -1 || true)"
if [ -n "$wheel" ]; then  # pinned to the wheel's exact version (e.g. 2.13.0+cpu); its dependencies from the index
  in_root /opt/conda/bin/python -m pip install --no-cache-dir --quiet "torch==$(echo "$wheel" | cut -d- -f2)" >&2
else
  in_root /opt/conda/bin/python -m pip install --no-cache-dir --quiet torch >&2
fi
rm -f "$ROOT"/etc/ssh/ssh_host_*
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/root/.cache

tar -C "$ROOT" -c . | docker import \
  -c 'ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' \
  -c 'CMD ["/bin/bash"]' \
  -c "LABEL org.lorarun.test-base=${KEY}" \
  - "$TAG" >&2
echo "$TAG"
