#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine: Debian packages, a virtual environment and
# the Python packages. Sourced by run.sh and test.sh; safe to run again (it only does what is
# missing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

# Debian packages: a C compiler (the benchmarks' baselines, and hvsim's slice-budget hook,
# devmodel/hvsim/budget.py, built on first use), venv support, the real
# firmware the end-to-end tests boot, tcpdump (an independent reader of our pcap captures),
# iproute2 (`ip netns` for the tap and iPXE DHCP tests, `ss` in the QEMU netdev interop test; not
# in a minimal Debian 12) and QEMU itself (the reference: interoperability tests of the netdevs,
# bench/boot.py, footprint.py).
debs=(gcc python3-venv seabios qemu-utils ipxe-qemu dnsmasq-base xorriso isolinux syslinux-common
      tcpdump iproute2 qemu-system-x86)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3-venv matters only when the interpreter we use lacks a working venv module.
if [ ${#missing[@]} -gt 0 ]; then
  filtered=()
  for p in "${missing[@]}"; do
    if [ "$p" = python3-venv ] && python3 -c 'import ensurepip, venv' 2>/dev/null; then continue; fi
    if [ "$p" = gcc ] && command -v gcc >/dev/null; then continue; fi
    filtered+=("$p")
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "setup: devmodel needs Python >= 3.11 ($py is $("$py" --version 2>&1))" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$py" -m venv .venv
fi
# Reinstall only when the project metadata changed.
stamp=.venv/.devmodel-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
# Byte-compile (incremental): where PYTHONDONTWRITEBYTECODE is set, every daemon start would
# otherwise compile every module again (about 0.1 s).
.venv/bin/python -m compileall -q devmodel >/dev/null || true
