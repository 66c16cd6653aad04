#!/usr/bin/env bash
# Installs versitygw (Apache-2.0 S3 gateway), the S3 server the integration
# tests start, with `go install` into the tool cache that
# internal/testenv/cache.go reads:
#
#   CACHE/tools/versitygw-VERSION/versitygw
#
# CACHE is $SCALR_BACKUP_CACHE, else $XDG_CACHE_HOME/scalr-backup, else
# $HOME/.cache/scalr-backup. Idempotent: does nothing when the cached binary
# was built from the wanted module version. Takes a few minutes otherwise.
set -euo pipefail

VERSION=1.8.0
MODULE=github.com/versity/versitygw

say() { printf '[install-versitygw] %s\n' "$*"; }
die() {
	printf '[install-versitygw] error: %s\n' "$*" >&2
	exit 1
}

if [[ -n "${SCALR_BACKUP_CACHE:-}" ]]; then
	cache=$SCALR_BACKUP_CACHE
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
	cache=$XDG_CACHE_HOME/scalr-backup
else
	cache=${HOME:?HOME is not set}/.cache/scalr-backup
fi

dir=$cache/tools/versitygw-$VERSION
bin=$dir/versitygw

# The binary's --version says "git" when built with go install, so ask the
# Go toolchain which module version it was built from.
have_versitygw() {
	[[ -x $bin ]] || return 1
	command -v go >/dev/null 2>&1 || return 0 # cannot check: trust the path
	go version -m "$bin" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+$MODULE[[:space:]]+v$VERSION([[:space:]]|$)"
}

if have_versitygw; then
	say "versitygw $VERSION already installed: $bin"
	exit 0
fi

command -v go >/dev/null 2>&1 || die "go not found: versitygw is built with go install"
say "building versitygw $VERSION with go install into $dir (takes a few minutes)"
mkdir -p "$dir"
# Build into a scratch folder, then rename, so an interrupted build never
# leaves a half-written binary at the cached path. Run outside the checkout
# so the project's go.mod plays no part.
build_dir=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$build_dir"' EXIT
(cd "$build_dir" && GOBIN=$build_dir GOFLAGS=-buildvcs=false \
	go install "$MODULE/cmd/versitygw@v$VERSION")
mv -f "$build_dir/versitygw" "$bin"
rm -rf "$build_dir"
trap - EXIT
have_versitygw || die "$bin was not built from $MODULE v$VERSION"
say "installed $bin"
