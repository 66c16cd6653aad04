# Shared by the set-up scripts: sourced, never run. The sourcing script sets
# LOG_PREFIX (its name in brackets on every line) before sourcing.
#
#   say, die           a line on stdout / an error on stderr and exit 1
#   as_root CMD...     CMD as root: directly, or with sudo -n
#   apt_install_no_service PKG...
#                      apt-get install without starting the packages' services
#   cache_dir          the tool and image cache: $SCALR_BACKUP_CACHE, else
#                      $XDG_CACHE_HOME/scalr-backup, else
#                      $HOME/.cache/scalr-backup (internal/testenv/cache.go
#                      follows the same rule)
#   mirror_uri SUITE   the Debian mirror, read from this machine's apt
#                      sources ($SCALR_BACKUP_DEBIAN_MIRROR overrides it)
#   unmount_under DIR  unmount every mount point at or below DIR
#   cleanup_build      remove $build_dir (unmounting first), for a trap
#   go_install_cached MODULE VERSION PKG DIR
#                      `go install PKG@vVERSION` into DIR, unless the binary
#                      there was built from MODULE at VERSION already

say() { printf '[%s] %s\n' "${LOG_PREFIX:?}" "$*"; }
die() {
	printf '[%s] error: %s\n' "${LOG_PREFIX:?}" "$*" >&2
	exit 1
}

as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo -n "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

# apt_install_no_service PKG...: apt-get update, then install the packages
# without starting their services: a policy-rc.d that denies every start is
# in place while apt-get runs (the machine's own, if it has one, is kept).
apt_install_no_service() {
	local policy=/usr/sbin/policy-rc.d own_policy=false status=0
	if [[ ! -e $policy ]]; then
		as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
		own_policy=true
	fi
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			-o Dpkg::Use-Pty=0 "$@" || status=$?
	if $own_policy; then
		as_root rm -f "$policy"
	fi
	return "$status"
}

cache_dir() {
	if [[ -n "${SCALR_BACKUP_CACHE:-}" ]]; then
		printf '%s\n' "$SCALR_BACKUP_CACHE"
	elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
		printf '%s\n' "$XDG_CACHE_HOME/scalr-backup"
	else
		printf '%s\n' "${HOME:?HOME is not set}/.cache/scalr-backup"
	fi
}

# find_mirror SUITE prints "RANK URI" for each enabled "deb" source with the
# main component: rank 0 for SUITE itself, 1 for any plain suite name (no
# "-updates", "-security"...), since one archive serves every release.
# Both apt formats: deb822 (*.sources) and one-line (sources.list, *.list).
find_mirror() {
	local suite=$1 files=() f
	shopt -s nullglob
	files=(/etc/apt/sources.list.d/*.sources)
	shopt -u nullglob
	# deb822: stanzas separated by blank lines; continuation lines start
	# with a space; fields are case-insensitive.
	if ((${#files[@]} > 0)); then
		for f in "${files[@]}"; do
			awk -v suite="$suite" '
				function flush() {
					if (uris != "" && types ~ /(^| )deb( |$)/ && comps ~ /(^| )main( |$)/ && tolower(enabled) != "no") {
						n = split(suites, s, " ")
						split(uris, u, " ")
						for (i = 1; i <= n; i++) {
							if (s[i] == suite) print 0, u[1]
							else if (s[i] !~ /[-\/]/) print 1, u[1]
						}
					}
					types = uris = suites = comps = enabled = ""; field = ""
				}
				/^[ \t]*#/ { next }
				/^[ \t]*$/ { flush(); next }
				/^[ \t]/ { val = $0; sub(/^[ \t]+/, "", val); add(val); next }
				{
					field = tolower($0); sub(/:.*/, "", field)
					val = $0; sub(/^[^:]*:[ \t]*/, "", val); add(val)
				}
				function add(v) {
					if (field == "types") types = types " " v
					else if (field == "uris") uris = uris " " v
					else if (field == "suites") suites = suites " " v
					else if (field == "components") comps = comps " " v
					else if (field == "enabled") enabled = v
				}
				END { flush() }
			' "$f"
		done
	fi
	# One-line format: deb [options] URI SUITE COMPONENT...
	files=()
	[[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
	shopt -s nullglob
	files+=(/etc/apt/sources.list.d/*.list)
	shopt -u nullglob
	if ((${#files[@]} > 0)); then
		awk -v suite="$suite" '
			$1 != "deb" { next }
			{
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				uri = $i; s = $(i + 1); main = 0
				for (j = i + 2; j <= NF; j++) if ($j == "main") main = 1
				if (!main) next
				if (s == suite) print 0, uri
				else if (s !~ /[-\/]/) print 1, uri
			}
		' "${files[@]}"
	fi
}

# mirror_uri [SUITE] prints the mirror to use for SUITE (default: $SUITE),
# http(s) or file, or nothing when the apt sources name none. (The image
# scripts call it without an argument: their recipe hashes cover the text
# of the function that calls it.)
mirror_uri() {
	if [[ -n ${SCALR_BACKUP_DEBIAN_MIRROR:-} ]]; then
		printf '%s\n' "$SCALR_BACKUP_DEBIAN_MIRROR"
		return
	fi
	find_mirror "${1:-${SUITE:?}}" | awk '$2 ~ /^(https?|file):/' | sort -s -k1,1n | awk 'NR == 1 { print $2 }'
}

# go_built_from BIN MODULE VERSION: whether BIN was built from MODULE at
# VERSION (a go-installed binary's own --version often says only "dev").
go_built_from() {
	[[ -x $1 ]] || return 1
	command -v go >/dev/null 2>&1 || return 0 # cannot check: trust the path
	go version -m "$1" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+$2[[:space:]]+v$3([[:space:]]|$)"
}

go_install_cached() {
	local module=$1 version=$2 pkg=$3 dir=$4 name build_dir
	name=$(basename "$pkg")
	if go_built_from "$dir/$name" "$module" "$version"; then
		say "$name $version already installed: $dir/$name"
		return 0
	fi
	command -v go >/dev/null 2>&1 || die "go not found: $name is built with go install"
	say "building $name $version with go install into $dir (takes a few minutes)"
	mkdir -p "$dir"
	# Build into a scratch folder, then rename, so an interrupted build
	# never leaves a half-written binary at the cached path. Run outside
	# the checkout so the project's go.mod plays no part.
	build_dir=$(mktemp -d "$dir/.build.XXXXXX")
	(cd "$build_dir" && GOBIN=$build_dir GOFLAGS=-buildvcs=false go install "$pkg@v$version") || {
		rm -rf "$build_dir"
		die "go install $pkg@v$version failed"
	}
	mv -f "$build_dir/$name" "$dir/$name"
	rm -rf "$build_dir"
	go_built_from "$dir/$name" "$module" "$version" || die "$dir/$name was not built from $module v$version"
	say "installed $dir/$name"
}

# unmount_under DIR unmounts every mount point at or below DIR, deepest
# first (a chroot build mounts /proc and friends).
unmount_under() {
	local dir m
	dir=$(realpath -m "$1")
	awk '{ print $5 }' /proc/self/mountinfo | sed 's/\\040/ /g' |
		awk -v d="$dir" 'index($0, d "/") == 1 || $0 == d' | sort -r |
		while IFS= read -r m; do
			as_root umount -l "$m" 2>/dev/null || true
		done
}

# cleanup_build removes the image scripts' $build_dir, unmounting first;
# --one-file-system never follows a mount that survived into the host.
build_dir=
cleanup_build() {
	[[ -n $build_dir && -d $build_dir ]] || return 0
	unmount_under "$build_dir"
	as_root rm -rf --one-file-system "$build_dir"
}
