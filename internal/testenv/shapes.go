//go:build linux

package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Image shapes: the Postgres images users run, made from the same root file
// system as the default image (the tarball scripts/setup-docker.sh built,
// no registry, no third debootstrap) by a thin layer: a container of the
// default image, an entrypoint script copied in, `docker commit` with the
// shape's ENTRYPOINT and CMD. Building one takes about a second, once per
// daemon.
const (
	// ShapeDefault is the project's test image as PostgresImageFor loads
	// it: ENTRYPOINT ["docker-entrypoint.sh"], CMD ["postgres"], its
	// set-up server on a private socket.
	ShapeDefault = ""
	// ShapeOfficial has the official postgres image's entrypoint
	// behaviour and config: ENTRYPOINT ["docker-entrypoint.sh"], CMD
	// ["postgres"]; an argument starting with '-' gets postgres put in
	// front; POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and
	// POSTGRES_INITDB_ARGS or their *_FILE variants (both set is an
	// error, an unreadable file ends the entrypoint);
	// POSTGRES_HOST_AUTH_METHOD (trust allows no password); on first start
	// initdb, then a set-up server with the same options plus
	// listen_addresses='' on the default socket (as the official one), the
	// database, /docker-entrypoint-initdb.d, then the final server.
	ShapeOfficial = "official"
	// ShapeNoCmd is an image with its own entrypoint and no CMD, like many
	// images that are not the official one: ENTRYPOINT
	// ["postgres-server"], its arguments passed to postgres as options
	// ("postgres" as an argument makes postgres exit: invalid argument);
	// first start: initdb (POSTGRES_USER, POSTGRES_PASSWORD required,
	// POSTGRES_DB, POSTGRES_INITDB_ARGS) and the database made in
	// single-user mode, no set-up server.
	ShapeNoCmd = "nocmd"
)

// PostgresShapes lists the shapes other than ShapeDefault.
var PostgresShapes = []string{ShapeOfficial, ShapeNoCmd}

// shapeSpec is how a shape is made from the default image.
type shapeSpec struct {
	file    string // where the entrypoint script goes
	script  string // its text; @PG_MAJOR@ stands for the major version
	changes []string
}

var shapeSpecs = map[string]shapeSpec{
	ShapeOfficial: {
		file:    "/usr/local/bin/docker-entrypoint.sh",
		script:  officialEntrypoint,
		changes: []string{`ENTRYPOINT ["docker-entrypoint.sh"]`, `CMD ["postgres"]`},
	},
	ShapeNoCmd: {
		file:    "/usr/local/bin/postgres-server",
		script:  noCmdEntrypoint,
		changes: []string{`ENTRYPOINT ["postgres-server"]`, `CMD []`},
	},
}

// PostgresImageNameShape is the name PostgresImageShape gives a shape:
// "scalr-test/postgres:MAJOR-SHAPE" (PostgresImageNameFor for ShapeDefault).
func PostgresImageNameShape(major int, shape string) string {
	if shape == ShapeDefault {
		return PostgresImageNameFor(major)
	}
	return PostgresImageNameFor(major) + "-" + shape
}

// PostgresImageShape makes the image of a shape for a Postgres major
// version in this daemon (once; PostgresImageFor first) and returns its
// name, PostgresImageNameShape.
func (d *Docker) PostgresImageShape(t testing.TB, major int, shape string) string {
	t.Helper()
	base := d.PostgresImageFor(t, major)
	if shape == ShapeDefault {
		return base
	}
	spec, ok := shapeSpecs[shape]
	if !ok {
		t.Fatalf("PostgresImageShape: no shape %q", shape)
	}
	name := PostgresImageNameShape(major, shape)
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	key := strconv.Itoa(major) + "-" + shape
	err, done := d.shapes[key]
	if !done {
		start := time.Now()
		err = d.buildShape(t, base, name, spec, major)
		if d.shapes == nil {
			d.shapes = map[string]error{}
		}
		d.shapes[key] = err
		if err == nil {
			t.Logf("image %s built in %s", name, time.Since(start).Round(time.Millisecond))
		}
	}
	if err != nil {
		t.Fatalf("build the image %s: %v", name, err)
	}
	return name
}

func (d *Docker) buildShape(t testing.TB, base, name string, spec shapeSpec, major int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	script := filepath.Join(t.TempDir(), filepath.Base(spec.file))
	text := strings.ReplaceAll(spec.script, "@PG_MAJOR@", strconv.Itoa(major))
	if err := os.WriteFile(script, []byte(text), 0o755); err != nil {
		return err
	}
	id, err := randHex(4)
	if err != nil {
		return err
	}
	ctr := "scalr-shape-build-" + id
	if _, err := d.Run(ctx, nil, "create", "--name", ctr, "--network", "none", base); err != nil {
		return err
	}
	defer d.Run(context.Background(), nil, "rm", "--force", ctr)
	if _, err := d.Run(ctx, nil, "cp", script, ctr+":"+spec.file); err != nil {
		return err
	}
	args := []string{"commit"}
	for _, c := range spec.changes {
		args = append(args, "--change", c)
	}
	_, err = d.Run(ctx, nil, append(args, ctr, name)...)
	return err
}

// officialEntrypoint is the official postgres image's docker-entrypoint.sh,
// trimmed to what a backup tool meets: the same variables, the same steps in
// the same order.
const officialEntrypoint = `#!/usr/bin/env bash
# docker-entrypoint.sh of scalr-backup's "official" test image shape
# (internal/testenv/shapes.go): the official postgres image's entrypoint,
# trimmed, with the same variables and steps.
set -Eeo pipefail

export PATH=/usr/lib/postgresql/@PG_MAJOR@/bin:$PATH
export PGDATA=${PGDATA:-/var/lib/postgresql/data}

# file_env VAR [DEFAULT]: VAR from $VAR or the file $VAR_FILE names.
file_env() {
	local var="$1" fileVar="${1}_FILE" def="${2:-}"
	if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
		printf >&2 'error: both %s and %s are set (but are exclusive)\n' "$var" "$fileVar"
		exit 1
	fi
	local val="$def"
	if [ "${!var:-}" ]; then
		val="${!var}"
	elif [ "${!fileVar:-}" ]; then
		val="$(<"${!fileVar}")"
	fi
	export "$var"="$val"
	unset "$fileVar"
}

docker_setup_env() {
	file_env 'POSTGRES_PASSWORD'
	file_env 'POSTGRES_USER' 'postgres'
	file_env 'POSTGRES_DB' "$POSTGRES_USER"
	file_env 'POSTGRES_INITDB_ARGS'
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	DATABASE_ALREADY_EXISTS=
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS=true
	fi
}

docker_process_sql() {
	local query_runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ -n "$POSTGRES_DB" ]; then
		query_runner+=(--dbname "$POSTGRES_DB")
	fi
	PGHOST= PGHOSTADDR= "${query_runner[@]}" "$@"
}

docker_temp_server_start() {
	if [ "$1" = 'postgres' ]; then
		shift
	fi
	set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
	PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" = 'postgres' ]; then
	docker_setup_env
	if [ "$(id -u)" = '0' ]; then
		mkdir -p "$PGDATA" /var/run/postgresql
		chmod 00700 "$PGDATA" || :
		chmod 03775 /var/run/postgresql
		find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
		exec setpriv --reuid=postgres --regid=postgres --init-groups --inh-caps=-all "${BASH_SOURCE[0]}" "$@"
	fi
	if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
		if [ -z "$POSTGRES_PASSWORD" ] && [ 'trust' != "$POSTGRES_HOST_AUTH_METHOD" ]; then
			echo >&2 'Error: Database is uninitialized and superuser password is not specified.'
			echo >&2 '       You must specify POSTGRES_PASSWORD to a non-empty value for the superuser.'
			exit 1
		fi
		ls /docker-entrypoint-initdb.d/ >/dev/null
		# shellcheck disable=SC2086 # a list of words, split on purpose
		if [ -n "$POSTGRES_PASSWORD" ]; then
			initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
		else
			initdb --username="$POSTGRES_USER" $POSTGRES_INITDB_ARGS
		fi
		auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
		printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
		export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
		docker_temp_server_start "$@"
		if [ "$POSTGRES_DB" != 'postgres' ]; then
			POSTGRES_DB= docker_process_sql --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;'
		fi
		for f in /docker-entrypoint-initdb.d/*; do
			case "$f" in
			*.sh) echo "running $f"; . "$f" ;;
			*.sql) echo "running $f"; docker_process_sql -f "$f"; echo ;;
			*) if [ -e "$f" ]; then echo "ignoring $f"; fi ;;
			esac
		done
		PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
		unset PGPASSWORD
		echo 'PostgreSQL init process complete; ready for start up.'
	else
		echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
	fi
fi

exec "$@"
`

// noCmdEntrypoint starts the server itself: the arguments are postgres'
// options.
const noCmdEntrypoint = `#!/usr/bin/env bash
# postgres-server: the entrypoint of scalr-backup's "nocmd" test image
# shape (internal/testenv/shapes.go), an image with its own entrypoint and no
# CMD. It starts the server itself; its arguments are postgres options.
set -Eeuo pipefail
export PATH=/usr/lib/postgresql/@PG_MAJOR@/bin:$PATH
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}

if [[ $(id -u) == 0 ]]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chmod 00700 "$PGDATA" || :
	chmod 03775 /var/run/postgresql
	find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
	exec setpriv --reuid=postgres --regid=postgres --init-groups --inh-caps=-all "${BASH_SOURCE[0]}" "$@"
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
	if [[ -z ${POSTGRES_PASSWORD:-} ]]; then
		echo "postgres-server: POSTGRES_PASSWORD is required" >&2
		exit 1
	fi
	echo "postgres-server: initdb in $PGDATA, superuser $user" >&2
	# shellcheck disable=SC2086 # a list of words, split on purpose
	initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") ${POSTGRES_INITDB_ARGS:-} >&2
	printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
	if [[ $db != postgres ]]; then
		# Single-user mode: no server, no socket before the real one.
		printf 'CREATE DATABASE "%s"\n' "${db//\"/\"\"}" | postgres --single -D "$PGDATA" postgres >/dev/null
	fi
fi
echo "postgres-server: starting postgres $*" >&2
exec postgres -D "$PGDATA" "$@"
`
