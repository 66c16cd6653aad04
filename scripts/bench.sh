#!/usr/bin/env bash
# `make bench`: scalr-backup side by side with restic 0.18.1 on the same
# generated dump-like stream, then the per-stage Go benchmarks.
#
#   1. go build ./... and bin/scalr-backup
#   2. scripts/test-setup.sh (restic 0.18.1, versitygw; idempotent)
#   3. TestBenchTable in internal/bench (SCALR_BACKUP_BENCH=1): backup,
#      backup again, dump and check --read-data, against a local folder,
#      versitygw on loopback and versitygw behind a proxy adding latency;
#      the piped memory run; `run` on a real Postgres container against
#      pg_dump alone; then the targets table (pass/FAIL per row). Printed,
#      and written as markdown (path printed at the end)
#   4. go test -bench . ./chunker ./repo (chunker, blob worker, packer,
#      restore reader, whole pipeline in memory, and BenchmarkCeiling: the
#      best single-stream throughput the stages allow on this machine)
#
# Environment (see internal/bench/bench_test.go for all of it):
#   SCALR_BENCH_SIZE=256MiB      input size (default 1GiB)
#   SCALR_BENCH_REPEAT=3         best of 3 runs per case
#   SCALR_BENCH_MEMORY=1         also the 4 GiB memory run (0: no memory runs)
#   SCALR_BENCH_RUN_SIZE=256MiB  table size of the `run` row (default 1GiB; 0 skips)
#   SCALR_BENCH_STAGES=0         skip step 4
#   SCALR_BENCH_SETUP=0          skip step 2 (tools already installed)
#   SCALR_BENCH_TIMEOUT=3h       go test timeout of step 3 (default 2h)
#   SCALR_BENCH_BENCHTIME=1s     -benchtime of step 4 (default 1s)
set -euo pipefail

GO=${GO:-go}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '[bench] %s\n' "$*"; }

say "building"
"$GO" build ./...
"$GO" build -o bin/scalr-backup ./cmd/scalr-backup

if [[ ${SCALR_BENCH_SETUP:-1} != 0 ]]; then
	say "making sure the tools exist (scripts/test-setup.sh)"
	bash scripts/test-setup.sh
fi

say "side-by-side table (internal/bench TestBenchTable)"
SCALR_BACKUP_BENCH=1 SCALR_BACKUP_REQUIRE_INTEGRATION=1 SCALR_BENCH_BIN="$root/bin/scalr-backup" \
	"$GO" test -count=1 -run '^TestBenchTable$' -v -timeout "${SCALR_BENCH_TIMEOUT:-2h}" ./internal/bench

if [[ ${SCALR_BENCH_STAGES:-1} != 0 ]]; then
	say "per-stage benchmarks"
	"$GO" test -count=1 -run '^$' -bench . -benchtime "${SCALR_BENCH_BENCHTIME:-1s}" ./chunker ./repo
fi
