#!/usr/bin/env bash
# Installs the tools the integration tests need, and says what it found.
#
#   restic 0.14   Debian's package (/usr/bin/restic), installed with apt-get
#   restic 0.18.1 built with `go install` into CACHE/tools/restic-0.18.1/restic
#   promtool      Debian's prometheus package (/usr/bin/promtool), apt-get
#   sshd          Debian's openssh-server (/usr/sbin/sshd), apt-get; its service
#                 is not started (tests run their own sshd on a loopback port)
#   versitygw     by scripts/install-versitygw.sh, when that script exists
#
# CACHE is $SCALR_BACKUP_CACHE, else $XDG_CACHE_HOME/scalr-backup, else
# $HOME/.cache/scalr-backup (the same rule as internal/testenv/cache.go).
#
# Idempotent: apt-get runs only when the restic package is missing, and the
# Go build only when the cached binary is missing or reports another version.
# Runs unattended (no terminal needed); needs root, or sudo, for apt-get.
set -euo pipefail

RESTIC_GO_VERSION=0.18.1
RESTIC_DEBIAN_VERSION=0.14 # the version bookworm ships (0.14.0)

LOG_PREFIX=test-setup
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

cache=$(cache_dir)
say "tool cache: $cache"


# --- restic 0.14: Debian's package -----------------------------------------

deb_restic_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' restic 2>/dev/null || true) == installed ]]
}

if deb_restic_installed; then
	say "Debian package restic is installed ($(dpkg-query -W -f='${Version}' restic))"
else
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found: restic $RESTIC_DEBIAN_VERSION comes from Debian's package"
	export DEBIAN_FRONTEND=noninteractive
	say "running apt-get update (the restic package is not installed)"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	say "installing Debian package restic"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o Dpkg::Use-Pty=0 restic
	deb_restic_installed || die "apt-get finished but the restic package is not installed"
fi

[[ -x /usr/bin/restic ]] || die "/usr/bin/restic is missing although the restic package is installed"
deb_version=$(/usr/bin/restic version 2>/dev/null || true)
[[ $deb_version == "restic $RESTIC_DEBIAN_VERSION"* ]] ||
	die "/usr/bin/restic reports '$deb_version', want restic $RESTIC_DEBIAN_VERSION (Debian bookworm's package)"

# --- promtool: Debian's prometheus package ------------------------------------
# For the alert rules in deploy/prometheus (promtool check rules, promtool
# test rules; nightly/deploy_test.go runs them). Only promtool is used: the
# package's prometheus service must not start, so a policy-rc.d that denies
# it is in place while apt-get runs (kept if the machine has its own).

if command -v promtool >/dev/null 2>&1; then
	say "promtool is installed ($(promtool --version 2>&1 | head -n 1))"
else
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found: promtool comes from Debian's prometheus package"
	say "installing Debian package prometheus (for promtool; its service is not started)"
	apt_install_no_service prometheus
	command -v promtool >/dev/null 2>&1 || die "apt-get finished but promtool is not on PATH"
fi

# --- sshd: Debian's openssh-server ---------------------------------------------
# For the SFTP backend's tests (internal/testenv/sshserver.go): they start
# /usr/sbin/sshd themselves with their own config, host key and client key on
# a loopback port, and stop it by PID. The package's service must not start,
# so a policy-rc.d that denies it is in place while apt-get runs (kept if the
# machine has its own). restic reaches the server through the ssh client
# (openssh-client, which openssh-server depends on).

if [[ -x /usr/sbin/sshd ]] && command -v ssh >/dev/null 2>&1; then
	say "sshd is installed ($(dpkg-query -W -f='${Version}' openssh-server 2>/dev/null || echo 'not from a package'))"
else
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found: sshd comes from Debian's openssh-server package"
	say "installing Debian package openssh-server (its service is not started)"
	apt_install_no_service openssh-server
	[[ -x /usr/sbin/sshd ]] || die "apt-get finished but /usr/sbin/sshd is missing"
	command -v ssh >/dev/null 2>&1 || die "apt-get finished but the ssh client is not on PATH"
fi

# --- restic 0.18.1: go install into the cache ---------------------------------

restic_dir=$cache/tools/restic-$RESTIC_GO_VERSION
restic_bin=$restic_dir/restic

have_go_restic() {
	[[ -x $restic_bin ]] && [[ $("$restic_bin" version 2>/dev/null || true) == "restic $RESTIC_GO_VERSION "* ]]
}

if have_go_restic; then
	say "restic $RESTIC_GO_VERSION already built: $restic_bin"
else
	command -v go >/dev/null 2>&1 || die "go not found: restic $RESTIC_GO_VERSION is built with go install"
	say "building restic $RESTIC_GO_VERSION with go install into $restic_dir (takes a few minutes)"
	mkdir -p "$restic_dir"
	# Build into a scratch folder, then rename, so an interrupted build never
	# leaves a half-written binary at the cached path. Run outside the
	# checkout so the project's go.mod plays no part.
	build_dir=$(mktemp -d "$restic_dir/.build.XXXXXX")
	trap 'rm -rf "$build_dir"' EXIT
	(cd "$build_dir" && GOBIN=$build_dir GOFLAGS=-buildvcs=false \
		go install "github.com/restic/restic/cmd/restic@v$RESTIC_GO_VERSION")
	mv -f "$build_dir/restic" "$restic_bin"
	rm -rf "$build_dir"
	trap - EXIT
	have_go_restic || die "$restic_bin does not report restic $RESTIC_GO_VERSION"
fi

# --- versitygw (written separately) -----------------------------------------

versitygw_script=$root/scripts/install-versitygw.sh
if [[ -f $versitygw_script ]]; then
	say "running scripts/install-versitygw.sh"
	if [[ -x $versitygw_script ]]; then
		"$versitygw_script"
	else
		sh "$versitygw_script"
	fi
else
	say "scripts/install-versitygw.sh not present: skipping versitygw"
fi

# --- what we have ------------------------------------------------------------

say "versions found:"
say "  /usr/bin/restic: $(/usr/bin/restic version)"
say "  $restic_bin: $("$restic_bin" version)"
say "  promtool: $(promtool --version 2>&1 | head -n 1)"
say "  sshd: $(/usr/sbin/sshd -V 2>&1 | head -n 1)"
shopt -s nullglob
for bin in "$cache"/tools/*/*; do
	[[ -f $bin && -x $bin ]] || continue
	tool_dir=$(basename "$(dirname "$bin")")
	[[ $tool_dir == "restic-$RESTIC_GO_VERSION" ]] && continue
	say "  $bin: ${tool_dir#"$(basename "$bin")"-} (from the cache folder name)"
done

# --- BEGIN docker: Docker engine and Postgres image (scripts/setup-docker.sh) ---
# Installs Debian's docker.io and debootstrap, and builds the Postgres 15
# image tarball CACHE/images/scalr-postgres-15.tar when it is missing.
say "running scripts/setup-docker.sh"
bash "$(dirname "${BASH_SOURCE[0]}")/setup-docker.sh"
# --- END docker ---------------------------------------------------------------

# --- BEGIN image tier: docker-compose and stand-in base images (scripts/setup-image-tier.sh) ---
# Installs Debian's docker-compose and builds the stand-ins for the
# Dockerfile's FROM images (debian:bookworm-slim, golang:GO_VERSION-bookworm)
# that internal/imagetier builds the shipped image on. After setup-docker.sh:
# it needs debootstrap and shares its package cache.
say "running scripts/setup-image-tier.sh"
bash "$(dirname "${BASH_SOURCE[0]}")/setup-image-tier.sh"
# --- END image tier -------------------------------------------------------------
