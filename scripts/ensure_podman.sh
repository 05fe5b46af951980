#!/usr/bin/env bash
# Install Debian's podman, runc and mmdebstrap for the image tests when they are missing
# and we may install (tests/deploy/test_image.py builds and runs the images with them).
set -u
missing=()
for tool in podman runc mmdebstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} for the image tests" >&2
  (apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1)) \
    || echo "could not install ${missing[*]}; the image tests will be skipped (and CI fails)" >&2
else
  echo "${missing[*]} missing; install them (apt-get install podman runc mmdebstrap)" >&2
fi
exit 0
