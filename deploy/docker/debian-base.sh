#!/usr/bin/env bash
# Bootstrap a Python base image from Debian's archive, for machines that cannot pull
# python:3.11-slim. Usage:
#   deploy/docker/debian-base.sh [TAG]          (default camserve-base:bookworm)
# then build either variant with --build-arg PYTHON_IMAGE=localhost/TAG.
# Needs root, mmdebstrap and podman. The packages come from the host's apt sources, or
# from the sources file named by DEBIAN_SOURCES (sources.list or deb822 format).
# The image has Debian's python3 (3.11) at /usr/bin/python3, venv, CA certificates and
# useradd; nothing else beyond Debian's essential packages.
set -euo pipefail

tag=${1:-camserve-base:bookworm}
sources=${DEBIAN_SOURCES:-}
if [ -z "$sources" ]; then
  for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$candidate" ]; then
      sources=$candidate
      break
    fi
  done
fi
if [ -z "$sources" ]; then
  echo "no apt sources found; set DEBIAN_SOURCES to a sources.list or .sources file" >&2
  exit 1
fi

mmdebstrap --variant=minbase --quiet \
  --include=python3,python3-venv,ca-certificates,passwd \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm - "$sources" \
  | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
echo "$tag"
