#!/usr/bin/env bash
# Installs what the image tier (internal/imagetier) needs and builds the
# stand-in base images the shipped Dockerfile is built on, without any image
# registry:
#
#   docker-compose   Debian's package (compose v1; bookworm has no compose v2
#                    package), installed with apt-get when missing
#   CACHE/images/standin-debian-bookworm-slim.tar
#                    stand-in for debian:bookworm-slim: a root file system
#                    made by debootstrap --variant=minbase from the Debian
#                    mirror of this machine's apt sources, with its
#                    /etc/apt/sources.list pointing at that mirror (the
#                    Dockerfile's runtime stage runs apt-get install in it)
#   CACHE/images/standin-golang-GO_VERSION-bookworm.tar
#                    stand-in for golang:GO_VERSION-bookworm: the same root
#                    file system plus this machine's Go toolchain (go env
#                    GOROOT) in /usr/local/go and its CA bundle
#   each with a .changes file beside it: the image config, one
#   `docker import --change` value a line (internal/imagetier imports the
#   tarballs into its private dockerd under the names the Dockerfile's FROM
#   lines use), and a .recipe file (what it was built from).
#
# GO_VERSION is the Dockerfile's `ARG GO_VERSION=` default; this machine's Go
# must be that version (go1.26.x for 1.26), or the stand-in would carry a
# name it does not deserve.
#
# CACHE is $SCALR_BACKUP_CACHE, else $XDG_CACHE_HOME/scalr-backup, else
# $HOME/.cache/scalr-backup (the same rule as internal/testenv/cache.go).
# The Debian mirror is read from this machine's apt sources at run time
# (SCALR_BACKUP_DEBIAN_MIRROR overrides it); the downloaded packages are
# shared with scripts/setup-docker.sh in CACHE/images/debootstrap-debs/bookworm.
#
# Idempotent: apt-get runs only when docker-compose is missing; a tarball is
# built only when it is missing or its .recipe differs (the build steps, the
# Go version, the CA bundle), written to a temporary file and renamed. Runs
# unattended; needs root (apt-get, debootstrap, chroot).
set -euo pipefail

# Bump to rebuild both stand-ins.
RECIPE_VERSION=1
SUITE=bookworm

LOG_PREFIX=setup-image-tier
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

cache=$(cache_dir)
images=$cache/images
say "image cache: $images"

pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

pkg_has_candidate() {
	local c
	c=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^[[:space:]]*Candidate:[[:space:]]*//p')
	[[ -n $c && $c != "(none)" ]]
}

# --- docker-compose: Debian's package -----------------------------------------
# Debian bookworm ships compose v1 (docker-compose 1.29, Python) and no
# docker-compose-v2 package; the tier uses whichever `docker-compose` is
# installed (a v2 binary under that name works too).

if command -v docker-compose >/dev/null 2>&1; then
	say "docker-compose is installed ($(docker-compose version --short 2>/dev/null || docker-compose --version))"
else
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found: docker-compose comes from Debian's package"
	if ! pkg_has_candidate docker-compose; then
		say "running apt-get update (apt knows no candidate for docker-compose)"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	fi
	say "installing Debian package docker-compose"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o Dpkg::Use-Pty=0 docker-compose
	command -v docker-compose >/dev/null 2>&1 || die "apt-get finished but docker-compose is not on PATH"
	say "docker-compose $(docker-compose version --short 2>/dev/null || true) installed"
fi

# --- what the stand-ins are made of -----------------------------------------------

go_version=$(sed -n 's/^ARG GO_VERSION=//p' "$root/Dockerfile" | head -n 1)
[[ -n $go_version ]] || die "no 'ARG GO_VERSION=' default in $root/Dockerfile"
command -v go >/dev/null 2>&1 || {
	[[ -x /usr/local/go/bin/go ]] && PATH=$PATH:/usr/local/go/bin
}
command -v go >/dev/null 2>&1 || die "go not found: the golang stand-in carries this machine's Go toolchain"
goroot=$(go env GOROOT)
machine_go=$(go env GOVERSION)
case $machine_go in
go"$go_version" | go"$go_version".*) ;;
*) die "the Dockerfile builds with golang:$go_version-bookworm but this machine has $machine_go: install Go $go_version or change ARG GO_VERSION" ;;
esac
[[ -x $goroot/bin/go ]] || die "$goroot/bin/go is missing (go env GOROOT)"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -s $ca_bundle ]] || die "$ca_bundle is missing (Debian's ca-certificates package)"
debootstrap_bin=$(PATH=$PATH:/usr/sbin:/sbin command -v debootstrap || true)
[[ -n $debootstrap_bin ]] || die "debootstrap not found (scripts/setup-docker.sh installs it)"

debian_tar=$images/standin-debian-bookworm-slim.tar
golang_tar=$images/standin-golang-$go_version-bookworm.tar

# The golang image's environment: the official image's, and this machine's
# module proxy settings, so that the build reaches modules as `go` does here.
golang_changes() {
	printf '%s\n' \
		"ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
		"ENV GOLANG_VERSION=${machine_go#go}" \
		"ENV GOTOOLCHAIN=local" \
		"ENV GOPATH=/go"
	local v val
	for v in GOPROXY GOSUMDB GONOSUMDB GONOPROXY GOPRIVATE GOINSECURE GOFLAGS; do
		val=$(go env "$v")
		[[ -n $val ]] && printf 'ENV %s=%s\n' "$v" "$val"
	done
	printf '%s\n' "WORKDIR /go" 'CMD ["bash"]'
}
debian_changes() {
	printf '%s\n' "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" 'CMD ["bash"]'
}

# --- building ----------------------------------------------------------------

# write_tar ROOTFS TARBALL CHANGES RECIPE: the tarball, its .changes and its
# .recipe, each through a temporary file and a rename.
write_tar() {
	local rootfs=$1 tarball=$2 changes=$3 recipe=$4 tmp
	tmp=$(mktemp "$images/.$(basename "$tarball").XXXXXX")
	tar --numeric-owner --one-file-system -C "$rootfs" -c . >"$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$tarball"
	printf '%s\n' "$changes" >"$tarball.changes.tmp"
	mv -f "$tarball.changes.tmp" "$tarball.changes"
	printf '%s\n' "$recipe" >"$tarball.recipe.tmp"
	mv -f "$tarball.recipe.tmp" "$tarball.recipe"
	say "wrote $tarball ($(du -h "$tarball" | cut -f1))"
}

# new_build_dir makes an empty build folder, removed (unmounting first) on
# exit.
new_build_dir() {
	mkdir -p "$images"
	build_dir=$(mktemp -d "$images/.build-standin.XXXXXX")
	trap cleanup_build EXIT
}

# build_debian makes the bookworm root file system with debootstrap and
# writes the debian stand-in.
build_debian() {
	[[ $(id -u) -eq 0 ]] || die "building the stand-in images needs root (debootstrap, chroot)"
	local mirror keyring rootfs debs start
	mirror=$(mirror_uri)
	[[ -n $mirror ]] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or sources.list (set SCALR_BACKUP_DEBIAN_MIRROR)"
	say "Debian mirror (from apt sources): $mirror"
	new_build_dir
	rootfs=$build_dir/rootfs
	debs=$images/debootstrap-debs/$SUITE
	mkdir -p "$rootfs" "$debs"
	keyring=()
	[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
		keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)

	start=$(date +%s)
	say "debootstrap --variant=minbase $SUITE (takes a few minutes)"
	if ! "$debootstrap_bin" --variant=minbase "${keyring[@]}" --cache-dir="$debs" \
		"$SUITE" "$rootfs" "$mirror" >"$build_dir/debootstrap.log" 2>&1; then
		tail -n 40 "$build_dir/debootstrap.log" >&2 || true
		[[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 40 "$rootfs/debootstrap/debootstrap.log" >&2
		die "debootstrap failed (log above)"
	fi
	say "debootstrap done in $(($(date +%s) - start))s"
	unmount_under "$rootfs"
	if awk '{ print $5 }' /proc/self/mountinfo | grep -qF "$rootfs"; then
		die "something is still mounted under $rootfs"
	fi

	# Like the official slim image: apt sources (here the machine's mirror,
	# as read above), no package lists, no caches, no documentation.
	printf 'deb %s %s main\n' "$mirror" "$SUITE" >"$rootfs/etc/apt/sources.list"
	rm -f "$rootfs"/etc/apt/sources.list.d/*
	rm -rf --one-file-system "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
		"$rootfs"/usr/share/locale/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
		"$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
		"$rootfs"/debootstrap
	find "$rootfs/var/log" -type f -exec truncate -s 0 '{}' +
	rm -rf --one-file-system "${rootfs:?}"/dev/* "$rootfs"/proc/* "$rootfs"/sys/* "$rootfs"/tmp/* "$rootfs"/run/*
	: >"$rootfs/etc/resolv.conf"
	chroot "$rootfs" sh -c 'command -v apt-get groupadd useradd usermod getent' >/dev/null ||
		die "the bookworm root file system lacks apt-get or the user tools the Dockerfile runs"
	write_tar "$rootfs" "$debian_tar" "$(debian_changes)" "$debian_recipe"
	cleanup_build
	trap - EXIT
}

# build_golang unpacks the debian stand-in, adds this machine's Go toolchain
# and CA bundle, and writes the golang stand-in.
build_golang() {
	[[ $(id -u) -eq 0 ]] || die "building the stand-in images needs root (chroot)"
	local rootfs got
	new_build_dir
	rootfs=$build_dir/rootfs
	mkdir -p "$rootfs"
	tar --numeric-owner -C "$rootfs" -xf "$debian_tar"
	say "adding Go ($machine_go from $goroot) and the CA bundle"
	mkdir -p "$rootfs/usr/local/go" "$rootfs/go/bin" "$rootfs/go/src" "$rootfs/etc/ssl/certs"
	chmod 1777 "$rootfs/go"
	tar -C "$goroot" -c . | tar -C "$rootfs/usr/local/go" -x --no-same-owner
	install -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
	# GOROOT set here only: without /proc in the chroot go cannot find
	# itself; in a container it can.
	got=$(chroot "$rootfs" env GOROOT=/usr/local/go GOTOOLCHAIN=local GOTELEMETRY=off \
		/usr/local/go/bin/go version) || die "go does not run in the golang stand-in"
	say "in the stand-in: $got"
	seed_gocache "$rootfs"
	write_tar "$rootfs" "$golang_tar" "$(golang_changes)" "$golang_recipe"
	cleanup_build
	trap - EXIT
}

# seed_gocache compiles the project's dependencies (not its own packages)
# inside the stand-in, as the Dockerfile's build stage will (same paths,
# -trimpath, CGO_ENABLED=0), and keeps only Go's build cache
# (/root/.cache/go-build): the image build then compiles the project's own
# code and links, instead of spending minutes on the dependencies on two
# cores. The cache is content-addressed, so a stale entry is never used;
# the module cache is removed, so the Dockerfile's `go mod download` still
# fetches every module through the module proxy.
seed_gocache() {
	local rootfs=$1 start
	start=$(date +%s)
	say "seeding Go's build cache with the ${#seed_packages[@]} dependency packages of ./cmd/scalr-backup"
	mkdir -p "$rootfs/seed" "$rootfs/proc"
	install -m 0644 "$root/go.mod" "$root/go.sum" "$rootfs/seed/"
	cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
	mkdir -p "$rootfs/dev"
	mknod -m 666 "$rootfs/dev/null" c 1 3
	mknod -m 666 "$rootfs/dev/zero" c 1 5
	mknod -m 666 "$rootfs/dev/urandom" c 1 9
	mount -t proc proc "$rootfs/proc"
	local envs=(PATH=/go/bin:/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root GOPATH=/go
		GOTOOLCHAIN=local GOTELEMETRY=off CGO_ENABLED=0 GOOS=linux)
	local line
	while IFS= read -r line; do
		[[ $line == "ENV GO"* ]] && envs+=("${line#ENV }")
	done < <(golang_changes)
	if ! chroot "$rootfs" env -i "${envs[@]}" sh -c \
		'cd /seed && go mod download && go build -trimpath "$@"' seed "${seed_packages[@]}" \
		>"$build_dir/seed.log" 2>&1; then
		tail -n 30 "$build_dir/seed.log" >&2
		die "compiling the dependencies in the golang stand-in failed (log above)"
	fi
	umount "$rootfs/proc"
	rm -rf --one-file-system "$rootfs/seed" "$rootfs/go/pkg" "${rootfs:?}"/tmp/* "$rootfs"/dev/*
	: >"$rootfs/etc/resolv.conf"
	say "build cache seeded in $(($(date +%s) - start))s ($(du -sh "$rootfs/root/.cache/go-build" | cut -f1))"
}

recipe_of() {
	printf '%s\n' "recipe $RECIPE_VERSION" "suite $SUITE" "$@" "$(declare -f "build_$1" write_tar)" |
		sha256sum | cut -d' ' -f1
}
debian_recipe=$(recipe_of debian "$(debian_changes)")
mapfile -t seed_packages < <(cd "$root" && go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./cmd/scalr-backup |
	grep -v '^github.com/scalr-platform/scalr-backup')
((${#seed_packages[@]} > 0)) || die "go list found no dependency of ./cmd/scalr-backup"
golang_recipe=$(recipe_of golang "$debian_recipe" "$(declare -f seed_gocache)" "$(cat "$root/go.sum")" "${seed_packages[*]}" "$(golang_changes)" "go $machine_go" "ca $(sha256sum <"$ca_bundle" | cut -d' ' -f1)")

have() { [[ -s $1 && -f $1.changes && -f $1.recipe && $(cat "$1.recipe") == "$2" ]]; }

start=$(date +%s)
if have "$debian_tar" "$debian_recipe"; then
	say "stand-in already built: $debian_tar ($(du -h "$debian_tar" | cut -f1))"
else
	build_debian
fi
if have "$golang_tar" "$golang_recipe"; then
	say "stand-in already built: $golang_tar ($(du -h "$golang_tar" | cut -f1))"
else
	build_golang
fi
say "stand-ins ready in $(($(date +%s) - start))s"
