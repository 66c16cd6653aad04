#!/usr/bin/env bash
# Runs every fuzz target of the repository for a short while:
#   go test -run '^$' -fuzz '^NAME$' -fuzztime 10s ./PKG
# Targets are the `func FuzzNAME(f *testing.F)` declarations in _test.go
# files (folders named testdata or vendor, or starting with . or _, are
# skipped, as go test skips them). FUZZTIME overrides the 10s. Zero targets
# is fine. New failing inputs land in PKG/testdata/fuzz/, to be committed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-10s}

targets=()
while IFS= read -r -d '' file; do
	dir=$(dirname "$file")
	while IFS= read -r name; do
		targets+=("$dir $name")
	done < <(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\([A-Za-z_][A-Za-z0-9_]* \*testing\.F\).*/\1/p' "$file")
done < <(find . \( -type d \( -name testdata -o -name vendor -o -name '.?*' -o -name '_*' \) -prune \) \
	-o \( -type f -name '*_test.go' -print0 \))

if ((${#targets[@]} == 0)); then
	echo "[fuzz-short] no fuzz targets found"
	exit 0
fi

mapfile -t targets < <(printf '%s\n' "${targets[@]}" | sort -u)
echo "[fuzz-short] ${#targets[@]} fuzz target(s), $fuzztime each"

# corpus_count DIR NAME: how many inputs DIR/testdata/fuzz/NAME holds (a
# failing input found by the fuzzer is written there).
corpus_count() {
	find "$1/testdata/fuzz/$2" -type f 2>/dev/null | wc -l
}

# fuzz_once DIR NAME: one run. Go's fuzzing engine sometimes ends a run
# that found nothing with "context deadline exceeded" when the time is up
# while a worker is busy (seen on a loaded 2-core machine); such a run,
# which wrote no failing input, is run once more. Any other failure, or a
# new input in the corpus, is a failure.
fuzz_once() {
	local dir=$1 name=$2 before out
	before=$(corpus_count "$dir" "$name")
	out=$(mktemp)
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$dir" 2>&1 | tee "$out"; then
		rm -f "$out"
		return 0
	fi
	if [[ ${3:-} != retry ]] && grep -q 'context deadline exceeded' "$out" &&
		[[ $(corpus_count "$dir" "$name") == "$before" ]]; then
		rm -f "$out"
		echo "[fuzz-short] $dir $name: the engine stopped on its deadline with no failing input: running it again"
		fuzz_once "$dir" "$name" retry
		return
	fi
	rm -f "$out"
	return 1
}

failed=()
for target in "${targets[@]}"; do
	dir=${target% *}
	name=${target##* }
	echo "[fuzz-short] $dir $name"
	if ! fuzz_once "$dir" "$name"; then
		failed+=("$dir $name")
	fi
done

if ((${#failed[@]} > 0)); then
	echo "[fuzz-short] failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "[fuzz-short] all ${#targets[@]} fuzz target(s) passed"
