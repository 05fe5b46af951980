#!/usr/bin/env bash
# Install Debian's redis-server for the Redis tests when neither REDIS_URL nor the binary
# is there and we may install (the tests start their own server from the binary).
set -u
if [ -n "${REDIS_URL:-}" ] || command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server for the Redis tests" >&2
  (apt-get install -y -q redis-server >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null 2>&1)) \
    || echo "could not install redis-server; the Redis tests will be skipped (and CI fails)" >&2
else
  echo "redis-server is missing; install it (apt-get install redis-server) or set REDIS_URL" >&2
fi
exit 0
