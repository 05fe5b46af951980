#!/usr/bin/env bash
# Install Debian's chromium for the browser test when it is missing and we may install.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser test" >&2
  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
    || echo "could not install chromium; the browser test will be skipped" >&2
else
  echo "chromium is missing; install it (apt-get install chromium) to run the browser test" >&2
fi
exit 0
