#!/usr/bin/env bash
# The GPU suite in one command: the GPU tests, then the GPU benchmark.
#
#   bash bench/gpu_check.sh               # on a CUDA machine: tests/gpu, then python -m bench.gpu
#   bash bench/gpu_check.sh --cpu-smoke   # the same code paths on the CPU at tiny sizes
#
# Writes to $OUT (default ./gpu-out): gpu.json, gpu.md (the table for BENCHMARKS.md),
# gpu_tests.json (the differences the GPU tests measured), profile.txt,
# pytest.log and bench.log. Each phase has its own time limit (TEST_LIMIT_S,
# BENCH_LIMIT_S); a phase that runs out is stopped and the script goes on, and the
# benchmark rewrites gpu.json after every section, so a run always leaves figures.
#
# A machine without the project's packages: wheels in .whl/ are installed into a
# temporary folder (pip --no-index --no-deps --target) and server/ and client/ go on
# PYTHONPATH. A redis-server on PATH, or one carried as .whl/redis/redis-server with its
# libraries in .whl/redis/lib, serves --processes > 1 on a free port.
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=""
if [ "${1:-}" = "--cpu-smoke" ]; then
  smoke="--cpu-smoke"
fi
PYTHON=${PYTHON:-python3}
OUT=${OUT:-./gpu-out}
TEST_LIMIT_S=${TEST_LIMIT_S:-90}
BENCH_LIMIT_S=${BENCH_LIMIT_S:-330}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
started=$(date +%s)
say() { echo "gpu_check: $* ($(($(date +%s) - started)) s)"; }

export PYTHONPATH="$PWD/server:$PWD/client:$PWD${PYTHONPATH:+:$PYTHONPATH}"
needs="import camserve.v1.explain_pb2_grpc, grpc_health.v1.health, grpc_reflection.v1alpha.reflection, captum, pytorch_grad_cam, redis"
if ! "$PYTHON" -c "$needs" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH="$site:$PYTHONPATH"
  say "wheels installed"
fi
"$PYTHON" -c "$needs" || say "warning: some packages are missing; the phases that need them fail"
export PYTHONUNBUFFERED=1

redis_url=""
redis_pid=""
redis_bin=$(command -v redis-server || true)
redis_libs=""
if [ -z "$redis_bin" ] && [ -x .whl/redis/redis-server ]; then
  redis_bin=.whl/redis/redis-server
  redis_libs=$PWD/.whl/redis/lib
fi
if [ -n "$redis_bin" ]; then
  port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  LD_LIBRARY_PATH="$redis_libs" "$redis_bin" --bind 127.0.0.1 --port "$port" --save "" \
    --appendonly no --maxmemory 4gb --maxmemory-policy allkeys-lru --logfile "" \
    >/dev/null 2>&1 &
  redis_pid=$!
  for _ in $(seq 50); do
    if "$PYTHON" -c "import redis, sys; sys.exit(not redis.Redis(port=$port).ping())" 2>/dev/null; then
      redis_url="redis://127.0.0.1:$port/0"
      break
    fi
    sleep 0.2
  done
  say "redis: ${redis_url:-did not start}"
fi
cleanup() {
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null; fi
}
trap cleanup EXIT

command -v nvidia-smi >/dev/null && nvidia-smi -L
say "phase 1: pytest tests/gpu -m gpu (limit ${TEST_LIMIT_S} s)"
GPU_TEST_FIGURES="$OUT/gpu_tests.json" timeout -k 10 "$TEST_LIMIT_S" "$PYTHON" -m pytest tests/gpu -m gpu -p no:cacheprovider \
  -o addopts="-ra --strict-markers" --durations=15 2>&1 | tee "$OUT/pytest.log"
tests_status=${PIPESTATUS[0]}
say "phase 1 ended with $tests_status"

say "phase 2: python -m bench.gpu (limit ${BENCH_LIMIT_S} s)"
timeout -k 20 "$BENCH_LIMIT_S" "$PYTHON" -m bench.gpu --out "$OUT" $smoke \
  ${redis_url:+--redis-url "$redis_url"} 2>&1 | tee "$OUT/bench.log"
bench_status=${PIPESTATUS[0]}
say "phase 2 ended with $bench_status"

if [ -f "$OUT/gpu.json" ]; then
  "$PYTHON" -m bench.gpu_report "$OUT/gpu.json" >"$OUT/gpu.md"
fi
say "done: tests $tests_status, bench $bench_status; $OUT holds $(ls "$OUT" | tr '\n' ' ')"
# pytest's 5 means every test was skipped or deselected (no CUDA here): not a failure.
if [ "$tests_status" -ne 0 ] && [ "$tests_status" -ne 5 ]; then
  exit "$tests_status"
fi
exit "$bench_status"
