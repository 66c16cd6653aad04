#!/usr/bin/env bash
# (Re)creates the fixture repositories under testdata/ with the real restic
# CLIs, checks them, and writes testdata/fixtures.json describing them.
#
#   restic-0.14-repo      restic 0.14 `init` (format version 2, its default)
#   restic-0.14-v1-repo   restic 0.14 `init --repository-version 1`
#   restic-0.18.1-repo    restic 0.18.1 `init` (format version 2)
#
# Each holds three snapshots:
#   1. `backup --stdin --stdin-filename dump.sql`: 1.5 MiB of SQL-like text,
#      cut into at least two blobs (see below)
#   2. `backup --stdin --stdin-filename nested/dir/file.bin`: 192 KiB of
#      pseudo-random bytes
#   3. `backup tree`: nested folders, an empty file and folder, symlinks,
#      modes, a duplicate file, and names with a space, unicode, a tab, a
#      newline, a quote and backslashes, and invalid UTF-8
# with fixed --time, --host and --tag values. The password of every
# repository is in NAME.password (a test fixture, not a secret).
#
# Deterministic: the content (from testdata/gen, fixed seeds), names, modes,
# mtimes, snapshot times, hosts and tags. Not deterministic: everything
# restic draws at random (master key, salt, chunker polynomial, IVs, hence
# every file name and snapshot ID), the key's creation time and host, the
# times of intermediate folders restic makes for stdin names, and the
# summary times 0.18.1 writes. So a rerun rewrites every file.
#
# The chunker polynomial is random per repository, so whether 1.5 MiB cuts
# into several blobs is chance (about 2 in 3: restic's chunker cuts after 512
# KiB, then on average once per MiB); the script re-creates a repository until
# dump.sql has at least two blobs.
#
# The key's scrypt parameters are whatever restic calibrated on the machine
# that ran this (restic has no flag to choose them): opening a fixture costs
# one scrypt run of a fraction of a second.
#
# git keeps no empty folders, so the empty data/XX, locks/ etc. folders that
# `restic init` makes are removed here too; both CLIs are checked against
# that state (a fresh clone's), on a copy, with `check --read-data`.
#
# Needs: go, /usr/bin/restic 0.14 and the cached restic 0.18.1 (run
# scripts/test-setup.sh). Override with RESTIC_014=... RESTIC_0181=...
# Scratch space: $FIXTURE_WORK (default /tmp/scalr-backup-fixtures), wiped
# first; its fixed path keeps the snapshots' `paths` the same across runs.
set -euo pipefail

export TZ=UTC LC_ALL=C.UTF-8
umask 022

say() { printf '[make-fixtures] %s\n' "$*"; }
die() {
	printf '[make-fixtures] error: %s\n' "$*" >&2
	exit 1
}

testdata=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ -n "${SCALR_BACKUP_CACHE:-}" ]]; then
	cache=$SCALR_BACKUP_CACHE
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
	cache=$XDG_CACHE_HOME/scalr-backup
else
	cache=${HOME:?HOME is not set}/.cache/scalr-backup
fi
restic_014=${RESTIC_014:-/usr/bin/restic}
restic_0181=${RESTIC_0181:-$cache/tools/restic-0.18.1/restic}

password=fixture-password
dump_size=$((3 << 19)) # 1.5 MiB
bin_size=$((192 << 10))
min_dump_blobs=2

check_version() { # BIN WANT
	local v
	[[ -x $1 ]] || die "$1 not found: run scripts/test-setup.sh"
	v=$("$1" version)
	[[ $v == "restic $2"* ]] || die "$1 reports '$v', want restic $2"
	say "using $1: $v"
}
check_version "$restic_014" 0.14
check_version "$restic_0181" 0.18.1

work=${FIXTURE_WORK:-/tmp/scalr-backup-fixtures}
say "scratch folder $work"
rm -rf "$work"
mkdir -p "$work/src" "$work/repos" "$work/desc" "$work/check"
src=$work/src

say "building testdata/gen"
go build -o "$work/gen" "$testdata/gen/main.go"
gen=$work/gen

say "writing content into $src"
"$gen" sql "$dump_size" 1 >"$src/dump.sql"
mkdir -p "$src/nested/dir"
"$gen" bin "$bin_size" 2 >"$src/nested/dir/file.bin"
"$gen" tree "$src"
find "$src" -depth -exec touch -h -d '2023-06-01 12:00:00' {} +

printf '%s' "$password" >"$work/password"
export RESTIC_PASSWORD_FILE=$work/password
export RESTIC_CACHE_DIR=$work/cache
unset RESTIC_PASSWORD RESTIC_PASSWORD_COMMAND RESTIC_REPOSITORY_FILE RESTIC_PACK_SIZE RESTIC_COMPRESSION || true

make_repo() { # NAME BIN INIT-ARGS...
	local name=$1 bin=$2
	shift 2
	export RESTIC=$bin RESTIC_REPOSITORY=$work/repos/$name
	local attempt blobs=0
	for attempt in 1 2 3 4 5 6 7 8 9 10; do
		say "$name: $bin $* (attempt $attempt)"
		rm -rf "$RESTIC_REPOSITORY"
		"$bin" "$@" >/dev/null
		say "$name: backup --stdin --stdin-filename dump.sql"
		"$bin" backup --quiet --stdin --stdin-filename dump.sql \
			--host fixture-host --tag scalr-app-db --tag fixture \
			--time '2024-01-01 03:00:00' <"$src/dump.sql"
		blobs=$("$gen" blobs /dump.sql)
		if ((blobs >= min_dump_blobs)); then
			break
		fi
		say "$name: dump.sql went into $blobs blob(s); making a new repository (new chunker polynomial)"
	done
	((blobs >= min_dump_blobs)) || die "$name: dump.sql never got $min_dump_blobs blobs"
	say "$name: dump.sql is $blobs blobs"
	say "$name: backup --stdin --stdin-filename nested/dir/file.bin"
	"$bin" backup --quiet --stdin --stdin-filename nested/dir/file.bin \
		--host fixture-host --tag fixture \
		--time '2024-01-02 03:00:00' <"$src/nested/dir/file.bin"
	say "$name: backup tree (from $src)"
	(cd "$src" && "$bin" backup --quiet --host fixture-files-host --tag fixture --tag files \
		--time '2024-01-03 03:00:00' tree)
	say "$name: describing (restic dump of every file, checked against the source)"
	"$gen" describe "$name" "$src" "$*" >"$work/desc/$name.json"
	find "$RESTIC_REPOSITORY" -mindepth 1 -type d -empty -delete
	unset RESTIC RESTIC_REPOSITORY
}

make_repo restic-0.14-repo "$restic_014" init
make_repo restic-0.14-v1-repo "$restic_014" init --repository-version 1
make_repo restic-0.18.1-repo "$restic_0181" init

names=(restic-0.14-repo restic-0.14-v1-repo restic-0.18.1-repo)

for name in "${names[@]}"; do
	for bin in "$restic_014" "$restic_0181"; do
		copy=$work/check/$name
		rm -rf "$copy"
		cp -a "$work/repos/$name" "$copy"
		say "$name: $("$bin" version | cut -d' ' -f1-2) check --read-data (on a copy without empty folders)"
		RESTIC_REPOSITORY=$copy "$bin" check --read-data >"$work/check.log" 2>&1 ||
			{
				cat "$work/check.log" >&2
				die "$name: check failed"
			}
		grep -q 'no errors were found' "$work/check.log" || {
			cat "$work/check.log" >&2
			die "$name: check did not say 'no errors were found'"
		}
		RESTIC_REPOSITORY=$copy "$bin" snapshots
	done
done

say "installing into $testdata"
for name in "${names[@]}"; do
	rm -rf "${testdata:?}/$name"
	mv "$work/repos/$name" "$testdata/$name"
	printf '%s' "$password" >"$testdata/$name.password"
done
descs=()
for name in "${names[@]}"; do
	descs+=("$work/desc/$name.json")
done
"$gen" merge "$password" "${descs[@]}" >"$testdata/fixtures.json.tmp"
mv "$testdata/fixtures.json.tmp" "$testdata/fixtures.json"

say "sizes:"
(cd "$testdata" && du -sh "${names[@]}" fixtures.json)
say "done; rm -rf $work to free the scratch space"
