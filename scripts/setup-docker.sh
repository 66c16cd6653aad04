#!/usr/bin/env bash
# Installs what the Docker/Postgres integration tests need, and builds the
# Postgres images they run, without any image registry:
#
#   docker.io, debootstrap   Debian's packages, installed with apt-get
#   CACHE/images/scalr-postgres-MAJOR.tar, one per entry of IMAGES below:
#     scalr-postgres-15.tar  Debian bookworm with Debian's postgresql-15
#     scalr-postgres-17.tar  Debian trixie with Debian's postgresql-17
#                            each a root file system (debootstrap
#                            --variant=minbase) with a small
#                            docker-entrypoint.sh that behaves like the
#                            official postgres image's; internal/testenv loads
#                            it into a private dockerd with `docker import`
#
# CACHE is $SCALR_BACKUP_CACHE, else $XDG_CACHE_HOME/scalr-backup, else
# $HOME/.cache/scalr-backup (the same rule as internal/testenv/cache.go).
#
# The Debian mirror is read from this machine's apt sources at run time
# (deb822 /etc/apt/sources.list.d/*.sources, else one-line sources.list
# entries); set SCALR_BACKUP_DEBIAN_MIRROR to override it.
#
# The same archive serves every suite, so the URI found for any plain suite
# (bookworm here) serves trixie too. Release files are verified with the
# host's /usr/share/keyrings/debian-archive-keyring.gpg: bookworm's
# debian-archive-keyring holds the trixie keys as well (and trixie's Release
# is also signed with the bookworm archive key).
#
# Idempotent: apt-get runs only when a package is missing (apt-get update only
# when apt knows no candidate for it), and each image is built only when its
# tarball is missing or was built from another recipe (the .recipe file
# beside it; each image has its own, so changing what only one image is made
# of rebuilds only that one). A tarball is written to a temporary file and
# renamed, so an interrupted build never leaves a half-written image. The
# downloaded packages are kept per suite in CACHE/images/debootstrap-debs/SUITE,
# so a rebuild downloads nothing. Runs unattended; needs root (or sudo) for
# apt-get, and root for debootstrap.
set -euo pipefail

# The images: "POSTGRES_MAJOR DEBIAN_SUITE", built in this order.
IMAGES=(
	"15 bookworm"
	"17 trixie"
)
# Bump to force a rebuild of every image; the recipe hash below also covers
# the suite, the entrypoint, the package list and the text of build_image.
RECIPE_VERSION=1
# Recipe hashes of earlier versions of this script that build the same
# image as this one, by major version: a tarball whose .recipe holds one is
# kept (its .recipe is brought up to date). 15: the script before it built
# more than one image (the same bookworm steps, parameterised since).
declare -A EQUIVALENT_RECIPES=(
	[15]=896189633a89aa0dc461999d7d19a3a7d67a351784d4beba7192509371a0f6e7
)

LOG_PREFIX=setup-docker
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cache=$(cache_dir)
images=$cache/images
say "image cache: $images"


# --- Debian packages: docker.io, debootstrap ---------------------------------

pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

pkg_has_candidate() {
	local c
	c=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^[[:space:]]*Candidate:[[:space:]]*//p')
	[[ -n $c && $c != "(none)" ]]
}

wanted=(docker.io debootstrap)
# debootstrap checks the Release signature with Debian's archive keyring.
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || wanted+=(debian-archive-keyring)

missing=()
for p in "${wanted[@]}"; do
	if pkg_installed "$p"; then
		say "Debian package $p is installed ($(dpkg-query -W -f='${Version}' "$p"))"
	else
		missing+=("$p")
	fi
done

if ((${#missing[@]} > 0)); then
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found: ${missing[*]} come from Debian's packages"
	need_update=0
	for p in "${missing[@]}"; do
		pkg_has_candidate "$p" || need_update=1
	done
	if ((need_update)); then
		say "running apt-get update (apt knows no candidate for some of: ${missing[*]})"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	fi
	# Installing docker.io must not start a system-wide dockerd: the tests
	# start their own on a private socket. When the machine has no
	# policy-rc.d, put one in place for the duration of the install.
	policy=/usr/sbin/policy-rc.d
	added_policy=0
	if [[ ! -e $policy ]]; then
		say "adding a temporary $policy so that installing docker.io starts no service"
		printf '#!/bin/sh\n# temporary, from scalr-backup scripts/setup-docker.sh\nexit 101\n' | as_root tee "$policy" >/dev/null
		as_root chmod 755 "$policy"
		added_policy=1
		trap 'as_root rm -f "$policy"' EXIT
	fi
	apt_install() {
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			-o Dpkg::Use-Pty=0 "${missing[@]}"
	}
	say "installing Debian packages: ${missing[*]}"
	if ! apt_install; then
		((need_update)) && die "apt-get install ${missing[*]} failed"
		say "apt-get install failed; running apt-get update and trying once more"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
		apt_install
	fi
	if ((added_policy)); then
		as_root rm -f "$policy"
		trap - EXIT
	fi
	for p in "${missing[@]}"; do
		pkg_installed "$p" || die "apt-get finished but the package $p is not installed"
	done
fi

dockerd_bin=$(PATH=$PATH:/usr/sbin:/sbin command -v dockerd || true)
[[ -n $dockerd_bin ]] || die "dockerd not found although docker.io is installed"
debootstrap_bin=$(PATH=$PATH:/usr/sbin:/sbin command -v debootstrap || true)
[[ -n $debootstrap_bin ]] || die "debootstrap not found although its package is installed"
say "dockerd: $dockerd_bin ($("$dockerd_bin" --version))"

# --- the image's entrypoint --------------------------------------------------

# A subset of the official postgres image's docker-entrypoint.sh: the same
# variables, the same first-start initialisation, postgres never as root.
# @PG_MAJOR@ stands for the image's Postgres major version.
read -r -d '' ENTRYPOINT_TEMPLATE <<'ENTRYPOINT_EOF' || true
#!/usr/bin/env bash
# docker-entrypoint.sh of scalr-backup's test image (scripts/setup-docker.sh):
# a subset of the official postgres image's entrypoint, same variables.
#
#   POSTGRES_USER      superuser name (default postgres)
#   POSTGRES_PASSWORD  its password; required unless
#                      POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_DB        database created on first start (default POSTGRES_USER)
#   PGDATA             data directory (default /var/lib/postgresql/data)
#   POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256)
#   /docker-entrypoint-initdb.d/*.sh and *.sql run once, after initdb
#
# Local (unix socket) connections are trusted, as in the official image; TCP
# connections need the password. Starts as root, prepares the directories,
# then re-executes itself as the postgres user.
set -Eeo pipefail

export PATH=/usr/lib/postgresql/@PG_MAJOR@/bin:$PATH
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
export POSTGRES_USER=${POSTGRES_USER:-postgres}
export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }

if [[ ${1:-} == -* ]]; then
	set -- postgres "$@"
fi

if [[ ${1:-} == postgres ]]; then
	if [[ $(id -u) == 0 ]]; then
		mkdir -p "$PGDATA" /var/run/postgresql
		chmod 00700 "$PGDATA" || :
		chmod 03775 /var/run/postgresql
		find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
		exec setpriv --reuid=postgres --regid=postgres --init-groups --inh-caps=-all \
			"${BASH_SOURCE[0]}" "$@"
	fi

	if [[ ! -s $PGDATA/PG_VERSION ]]; then
		auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
		if [[ -z ${POSTGRES_PASSWORD:-} && $auth != trust ]]; then
			log "error: database is uninitialized and POSTGRES_PASSWORD is not set" \
				"(set it, or POSTGRES_HOST_AUTH_METHOD=trust)"
			exit 1
		fi
		log "initdb in $PGDATA, superuser $POSTGRES_USER"
		# POSTGRES_INITDB_ARGS is a list of words, split on purpose.
		# shellcheck disable=SC2086
		if [[ -n ${POSTGRES_PASSWORD:-} ]]; then
			# The password goes through a pipe, never argv.
			initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
				${POSTGRES_INITDB_ARGS:-} >&2
		else
			initdb --username="$POSTGRES_USER" ${POSTGRES_INITDB_ARGS:-} >&2
		fi
		printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

		# A temporary server with the same options, on a private socket
		# directory so that nobody waiting for the database sees it before
		# it is initialised.
		initsock=$(mktemp -d /tmp/pg-init.XXXXXX)
		tmpargs=("${@:2}" -c listen_addresses= -k "$initsock")
		pg_ctl -D "$PGDATA" -w -o "$(printf '%q ' "${tmpargs[@]}")" start >&2
		export PGHOST=$initsock
		psql=(psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password)
		if [[ $POSTGRES_DB != postgres ]]; then
			log "creating database $POSTGRES_DB"
			"${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >&2
		fi
		for f in /docker-entrypoint-initdb.d/*; do
			case $f in
			*.sh)
				log "running $f"
				# shellcheck source=/dev/null
				. "$f"
				;;
			*.sql) log "running $f" && "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" >&2 ;;
			*) if [[ -e $f ]]; then log "ignoring $f"; fi ;;
			esac
		done
		pg_ctl -D "$PGDATA" -m fast -w stop >&2
		unset PGHOST
		rm -rf "$initsock"
		log "init done; starting postgres"
	fi
fi

exec "$@"
ENTRYPOINT_EOF

# --- the images ---------------------------------------------------------------

have_image() {
	[[ -s $tarball && -f $tarball.recipe && $(cat "$tarball.recipe") == "$recipe" ]]
}

build_image() {
	[[ $(id -u) -eq 0 ]] || die "building the image needs root (debootstrap, chroot)"
	local mirror keyring rootfs debs start end
	mirror=$(mirror_uri)
	[[ -n $mirror ]] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or sources.list (set SCALR_BACKUP_DEBIAN_MIRROR)"
	say "Debian mirror (from apt sources): $mirror"

	mkdir -p "$images"
	build_dir=$(mktemp -d "$images/.build.XXXXXX")
	trap cleanup_build EXIT
	rootfs=$build_dir/rootfs
	debs=$images/debootstrap-debs/$SUITE
	mkdir -p "$rootfs" "$debs"

	keyring=()
	[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
		keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)

	start=$(date +%s)
	say "debootstrap --variant=minbase --include=$PACKAGES $SUITE (takes a few minutes)"
	# --cache-dir keeps the downloaded packages, so a rebuild downloads
	# nothing; one folder per suite.
	if ! "$debootstrap_bin" --variant=minbase --include="$PACKAGES" "${keyring[@]}" \
		--cache-dir="$debs" \
		"$SUITE" "$rootfs" "$mirror" >"$build_dir/debootstrap.log" 2>&1; then
		tail -n 40 "$build_dir/debootstrap.log" >&2 || true
		[[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 40 "$rootfs/debootstrap/debootstrap.log" >&2
		if grep -qiE 'signed by unknown key|invalid release signature|no_pubkey' "$build_dir/debootstrap.log"; then
			die "debootstrap could not verify the Release file of $SUITE with the keyring" \
				"${keyring[*]:-of debootstrap}: update debian-archive-keyring (apt-get install" \
				"debian-archive-keyring) and run again"
		fi
		die "debootstrap failed (log above)"
	fi
	end=$(date +%s)
	say "debootstrap done in $((end - start))s"
	unmount_under "$rootfs"
	if awk '{ print $5 }' /proc/self/mountinfo | grep -qF "$rootfs"; then
		die "something is still mounted under $rootfs"
	fi

	say "configuring the image"
	# The cluster postgresql-common made while installing: the entrypoint
	# runs initdb itself, in PGDATA.
	rm -rf --one-file-system "$rootfs"/etc/postgresql/* "$rootfs"/var/lib/postgresql/* "$rootfs"/var/log/postgresql/*
	# Like the official image: listen on every address (harmless with
	# --network none, where only loopback exists).
	sed -ri "s!^#?(listen_addresses)[[:space:]]*=[[:space:]]*[^[:space:]]+.*!\1 = '*'!" \
		"$rootfs/usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample"
	grep -q "^listen_addresses = '\*'" "$rootfs/usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample" ||
		die "could not set listen_addresses in postgresql.conf.sample"
	install -d -m 0755 "$rootfs/docker-entrypoint-initdb.d"
	printf '%s\n' "$ENTRYPOINT" >"$rootfs/usr/local/bin/docker-entrypoint.sh"
	chmod 0755 "$rootfs/usr/local/bin/docker-entrypoint.sh"

	say "stripping documentation, translations, package caches"
	rm -rf --one-file-system "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
		"$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian "$rootfs"/usr/share/i18n \
		"$rootfs"/usr/share/postgresql/$PG_MAJOR/man \
		"$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
		"$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
		"$rootfs"/debootstrap
	# Postgres's JIT (llvmjit.so and the bitcode it inlines) pulls in LLVM
	# and z3, about 165 MB, for nothing a backup test needs. Without
	# llvmjit.so postgres treats JIT as unavailable, silently. LLVM's
	# library is libLLVM-14.so.1 in bookworm, libLLVM.so.19.1 (and a
	# libLLVM-19.so link) in trixie.
	rm -rf --one-file-system "$rootfs"/usr/lib/postgresql/$PG_MAJOR/lib/llvmjit* \
		"$rootfs"/usr/lib/postgresql/$PG_MAJOR/lib/bitcode \
		"$rootfs"/usr/lib/*-linux-gnu*/libLLVM[-.]*so* "$rootfs"/usr/lib/*-linux-gnu*/libz3.so*
	if compgen -G "$rootfs/usr/lib/*/libLLVM*" >/dev/null; then
		die "LLVM is still in the image: $(cd "$rootfs" && echo usr/lib/*/libLLVM*)"
	fi
	# The snakeoil certificate made by ssl-cert: postgres here does not use
	# TLS, and no image should carry a private key made on the build host.
	rm -f "$rootfs"/etc/ssl/private/ssl-cert-snakeoil.key "$rootfs"/etc/ssl/certs/ssl-cert-snakeoil.pem
	find "$rootfs/var/log" -type f -exec truncate -s 0 '{}' +
	# Docker provides /dev, /proc, /sys, /etc/hosts, resolv.conf, hostname.
	rm -rf --one-file-system "${rootfs:?}"/dev/* "$rootfs"/proc/* "$rootfs"/sys/* "$rootfs"/tmp/* "$rootfs"/run/*
	install -d -m 03775 -o "$(chroot "$rootfs" id -u postgres)" -g "$(chroot "$rootfs" id -g postgres)" \
		"$rootfs/run/postgresql"
	: >"$rootfs/etc/resolv.conf"

	say "checking the image's tools"
	local nobody t
	nobody=$(chroot "$rootfs" id -u nobody)
	chroot "$rootfs" /usr/lib/postgresql/$PG_MAJOR/bin/postgres --version
	for t in psql pg_dump pg_dumpall pg_restore pg_isready; do
		# Both the version's own binary and Debian's /usr/bin wrapper, as
		# an unprivileged user.
		chroot "$rootfs" setpriv --reuid="$nobody" --regid="$nobody" --clear-groups \
			/usr/lib/postgresql/$PG_MAJOR/bin/$t --version >/dev/null ||
			die "$t does not run in the image"
		chroot "$rootfs" setpriv --reuid="$nobody" --regid="$nobody" --clear-groups \
			env -i PATH=/usr/bin:/bin /usr/bin/$t --version >/dev/null ||
			die "/usr/bin/$t does not run in the image as an unprivileged user"
	done
	# Nothing postgres loads may miss a library the stripping removed.
	local missing_libs
	# shellcheck disable=SC2016 # expanded by the image's bash
	missing_libs=$(chroot "$rootfs" bash -c 'for f in /usr/lib/postgresql/*/bin/* /usr/lib/postgresql/*/lib/*.so; do
		ldd "$f" 2>/dev/null | sed -n "s|^|$f: |; /not found/p"; done')
	[[ -z $missing_libs ]] || die "libraries missing in the image:"$'\n'"$missing_libs"
	chroot "$rootfs" bash -n /usr/local/bin/docker-entrypoint.sh || die "entrypoint has a syntax error"
	chroot "$rootfs" setpriv --help >/dev/null || die "setpriv is missing from the image"

	local tmp_tar
	tmp_tar=$(mktemp "$images/.$IMAGE_NAME.tar.XXXXXX")
	say "writing $tarball"
	tar --numeric-owner --one-file-system -C "$rootfs" -c . >"$tmp_tar"
	chmod 0644 "$tmp_tar"
	mv -f "$tmp_tar" "$tarball"
	printf '%s\n' "$recipe" >"$tarball.recipe.tmp"
	mv -f "$tarball.recipe.tmp" "$tarball.recipe"
	cleanup_build
	trap - EXIT
	end=$(date +%s)
	say "image built in $((end - start))s: $tarball ($(du -h "$tarball" | cut -f1))"
}

# select_image sets the variables that describe the image of Postgres major
# version $1 from Debian suite $2: PG_MAJOR, SUITE, IMAGE_NAME, PACKAGES,
# ENTRYPOINT, tarball and recipe, the hash of what the tarball is built from
# (the build steps included), so that a changed build rebuilds the image.
select_image() {
	PG_MAJOR=$1
	SUITE=$2
	IMAGE_NAME=scalr-postgres-$PG_MAJOR
	PACKAGES=postgresql-$PG_MAJOR,postgresql-client-$PG_MAJOR
	ENTRYPOINT=${ENTRYPOINT_TEMPLATE//@PG_MAJOR@/$PG_MAJOR}
	tarball=$images/$IMAGE_NAME.tar
	recipe=$(printf '%s\n' "recipe $RECIPE_VERSION" "suite $SUITE" "packages $PACKAGES" "$ENTRYPOINT" \
		"$(declare -f build_image)" | sha256sum | cut -d' ' -f1)
}

# A cache made before the packages were kept per suite: those were
# bookworm's.
if compgen -G "$images/debootstrap-debs/*.deb" >/dev/null; then
	say "moving the cached bookworm packages to $images/debootstrap-debs/bookworm"
	mkdir -p "$images/debootstrap-debs/bookworm"
	mv -f "$images"/debootstrap-debs/*.deb "$images/debootstrap-debs/bookworm/"
fi

for spec in "${IMAGES[@]}"; do
	# shellcheck disable=SC2086 # two words on purpose
	select_image $spec
	if [[ -s $tarball && -f $tarball.recipe && -n ${EQUIVALENT_RECIPES[$PG_MAJOR]:-} &&
		$(cat "$tarball.recipe") == "${EQUIVALENT_RECIPES[$PG_MAJOR]}" ]]; then
		say "image $tarball was built by an earlier version of this script with the same steps: keeping it"
		printf '%s\n' "$recipe" >"$tarball.recipe.tmp"
		mv -f "$tarball.recipe.tmp" "$tarball.recipe"
	fi
	if have_image; then
		say "image already built: $tarball ($(du -h "$tarball" | cut -f1))"
		continue
	fi
	if [[ -e $tarball ]]; then
		say "image $tarball was built from another recipe: rebuilding"
	else
		say "image $tarball missing: building"
	fi
	build_image
done
