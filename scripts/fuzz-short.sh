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

failed=()
for target in "${targets[@]}"; do
	dir=${target% *}
	name=${target##* }
	echo "[fuzz-short] $dir $name"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$dir"; then
		failed+=("$dir $name")
	fi
done

if ((${#failed[@]} > 0)); then
	echo "[fuzz-short] failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "[fuzz-short] all ${#targets[@]} fuzz target(s) passed"
