#!/usr/bin/env bash
# Installs versitygw (Apache-2.0 S3 gateway), the S3 server the integration
# tests start, with `go install` into the tool cache that
# internal/testenv/cache.go reads:
#
#   CACHE/tools/versitygw-VERSION/versitygw
#
# CACHE: see scripts/lib.sh. Idempotent: does nothing when the cached binary
# was built from the wanted module version. Takes a few minutes otherwise.
set -euo pipefail

VERSION=1.8.0

LOG_PREFIX=install-versitygw
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

go_install_cached github.com/versity/versitygw "$VERSION" github.com/versity/versitygw/cmd/versitygw \
	"$(cache_dir)/tools/versitygw-$VERSION"
