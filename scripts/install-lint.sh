#!/usr/bin/env bash
# Installs golangci-lint, which `make lint` runs with .golangci.yml, with
# `go install` at a pinned version into the tool cache:
#
#   CACHE/tools/golangci-lint-VERSION/golangci-lint
#
# and prints its path. CACHE: see scripts/lib.sh. Idempotent: does nothing
# when the cached binary was built from the wanted version; the first build
# takes a few minutes.
set -euo pipefail

VERSION=2.15.0

LOG_PREFIX=install-lint
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir=$(cache_dir)/tools/golangci-lint-$VERSION
go_install_cached github.com/golangci/golangci-lint/v2 "$VERSION" \
	github.com/golangci/golangci-lint/v2/cmd/golangci-lint "$dir" >&2
printf '%s\n' "$dir/golangci-lint"
