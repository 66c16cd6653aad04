//go:build linux

package main

// Every Postgres container users run (issue 12), through the commands
// (in-process: discover, pg-backup, run, restore, drill) against a private
// dockerd, on image shapes made from the project's root file systems
// (testenv: the official image's entrypoint and CMD, an own entrypoint
// without CMD; Postgres 15 and 17): credentials from the container's
// environment or mounted secrets, local password authentication, trust, a
// server on another port, PGDATA on a named volume, several databases per
// server. Each is backed up, restored and drilled, and compared table by
// table (row counts and checksums of the rows); the containers the tools
// cannot reach are named with the reason, and a drill that can never
// connect fails at once with the container's log.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/pgstream"
	"github.com/scalr-platform/scalr-backup/repo"
)

// shapeCase is one container of TestPostgresShapes.
type shapeCase struct {
	name string
	opts testenv.PostgresOptions
	// extra are databases made besides POSTGRES_DB.
	extra []string
	// What discovery must find.
	port   int
	pwFrom string
}

// shapeAwkward is a database name a tool gets wrong when it quotes badly:
// double and single quotes, a space, '%' and '/' (escaped in the dump's
// file name), non-ASCII.
const shapeAwkward = `Kunden "Ärger" 100%/ü'x`

func shapeCases() []shapeCase {
	app := map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}
	with := func(m map[string]string, kv ...string) map[string]string {
		m = maps.Clone(m)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	scram := "--auth-local=scram-sha-256 --no-sync"
	// Each container has one setting or two (fewer containers, fewer
	// drills to wait for); every setting of the issue is in one.
	return []shapeCase{
		// An image with its own entrypoint and no CMD.
		{name: "scalr-shape-nocmd-db", opts: testenv.PostgresOptions{Shape: testenv.ShapeNoCmd, Cmd: []string{}, Env: app},
			port: 5432, pwFrom: "POSTGRES_PASSWORD"},
		// The official image's shape, Postgres 15, PGDATA on a named
		// volume.
		{name: "scalr-shape-official-db", opts: testenv.PostgresOptions{Shape: testenv.ShapeOfficial, Env: app,
			Volumes: []string{"scalr-shape-pgdata:/var/lib/postgresql/data"}},
			port: 5432, pwFrom: "POSTGRES_PASSWORD"},
		// Postgres 17, the server on another port.
		{name: "scalr-shape-pg17-db", opts: testenv.PostgresOptions{Shape: testenv.ShapeOfficial, Major: 17, Env: app,
			Cmd: []string{"postgres", "-c", "port=5433", "-c", "fsync=off"}, Port: 5433},
			port: 5433, pwFrom: "POSTGRES_PASSWORD"},
		// Credentials from mounted secrets; local connections need the
		// password.
		{name: "scalr-shape-secret-db", opts: testenv.PostgresOptions{Shape: testenv.ShapeOfficial,
			Env: map[string]string{"POSTGRES_USER_FILE": "/run/secrets/pg_user", "POSTGRES_PASSWORD_FILE": "/run/secrets/pg_password",
				"POSTGRES_DB": "app", "POSTGRES_INITDB_ARGS": scram},
			Files: map[string]string{"/run/secrets/pg_user": "owner\n", "/run/secrets/pg_password": "secret from a file 7Hq\n"}},
			port: 5432, pwFrom: "POSTGRES_PASSWORD_FILE"},
		// No password at all.
		{name: "scalr-shape-trust-db", opts: testenv.PostgresOptions{Shape: testenv.ShapeOfficial, Env: with(app, "POSTGRES_HOST_AUTH_METHOD", "trust")},
			port: 5432, pwFrom: ""},
		// Four databases of the app's, one with an awkward name, beside
		// postgres; local socket authentication with the password from
		// POSTGRES_PASSWORD (a common hardening).
		{name: "scalr-shape-multi-db", opts: testenv.PostgresOptions{Shape: testenv.ShapeOfficial, Env: with(app, "POSTGRES_INITDB_ARGS", scram)},
			extra: []string{"reports", "archive", shapeAwkward}, port: 5432, pwFrom: "POSTGRES_PASSWORD"},
	}
}

// shapeSeed fills a database: rows that differ per container and database,
// a table with an awkward name in a schema of its own, a large object.
func shapeSeed(container, db string) string {
	tag := strings.ReplaceAll(container+"/"+db, "'", "''")
	return fmt.Sprintf(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, at timestamptz, price numeric(10,2), raw bytea);
INSERT INTO items SELECT i, '%[1]s item ' || i, '2026-01-01 00:00:00+00'::timestamptz + i * interval '37 minutes', i * 1.25, decode(md5('%[1]s' || i), 'hex')
  FROM generate_series(1, 300) i;
CREATE SCHEMA "Verkauf ✓";
CREATE TABLE "Verkauf ✓"."Bestellung ""x""" (id int, note text);
INSERT INTO "Verkauf ✓"."Bestellung ""x""" SELECT i, 'grüße ' || i || ' %[1]s' FROM generate_series(1, 40) i;
SELECT lo_from_bytea(0, convert_to('%[1]s large object', 'UTF8'));
`, tag)
}

// shapeDamage changes a database the seed filled.
const shapeDamage = `DELETE FROM items WHERE id % 3 = 0; UPDATE items SET name = 'changed' WHERE id = 1; DROP TABLE "Verkauf ✓"."Bestellung ""x""";`

// quoteIdentSQL quotes a name for SQL.
func quoteIdentSQL(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// liveChecksums runs pgstream.ChecksumSQL in a database of the container.
func liveChecksums(t *testing.T, c *testenv.Container, db string) map[string]string {
	t.Helper()
	sums, err := pgstream.ParseChecksums(c.Psql(t, db, pgstream.ChecksumSQL))
	if err != nil {
		t.Fatalf("%s/%s: %v", c.Name, db, err)
	}
	return sums
}

// discoverJSON runs discover --json and returns the targets by container.
func discoverJSON(t *testing.T, env map[string]string, args ...string) (map[string]pgstream.Target, result) {
	t.Helper()
	res := runCLI(t, env, nil, append([]string{"discover", "--json"}, args...)...)
	var list []pgstream.Target
	if err := json.Unmarshal([]byte(res.stdout), &list); err != nil {
		t.Fatalf("discover --json: %v\n%s\n%s", err, res.stdout, res.stderr)
	}
	out := map[string]pgstream.Target{}
	for _, tg := range list {
		out[tg.Container] = tg
	}
	return out, res
}

// manifestDatabases are the databases the newest backup of a container
// holds, and the manifest.
func manifestDatabases(t *testing.T, env map[string]string, container string) ([]string, *pgstream.Manifest) {
	t.Helper()
	ctx := context.Background()
	r, err := repo.Open(ctx, local.New(env["RESTIC_REPOSITORY"]), env["RESTIC_PASSWORD"], repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, m, err := pgstream.FindBackup(ctx, r, container, "latest", "")
	if err != nil {
		t.Fatalf("%s: %v", container, err)
	}
	var dbs []string
	for _, db := range m.Databases {
		dbs = append(dbs, db.Name)
	}
	return dbs, m
}

func TestPostgresShapes(t *testing.T) {
	testenv.Integration(t)
	begin := time.Now()
	d := testenv.StartDocker(t)
	step := time.Now()
	for _, major := range testenv.PostgresMajors {
		d.PostgresImageShape(t, major, testenv.ShapeOfficial)
	}
	d.PostgresImageShape(t, 15, testenv.ShapeNoCmd)
	t.Logf("dockerd (%s), images and shapes ready in %s", d.StorageDriver(), time.Since(step).Round(time.Millisecond))

	cases := shapeCases()
	step = time.Now()
	containers := map[string]*testenv.Container{}
	want := map[string][]string{} // container -> databases of a default backup
	orig := map[string]map[string]string{}
	sums := map[string]map[string]map[string]string{}
	var secrets []string
	for _, sc := range cases {
		if len(sc.opts.Volumes) > 0 {
			t.Cleanup(func() { d.CLI(t, "volume", "rm", "--force", "scalr-shape-pgdata") }) // after the container's removal
		}
		c := d.RunPostgresWith(t, sc.name, sc.opts)
		containers[sc.name] = c
		if c.Password != "" {
			secrets = append(secrets, c.Password)
		}
		for _, db := range sc.extra {
			c.Psql(t, "postgres", "CREATE DATABASE "+quoteIdentSQL(db)+";")
		}
		dbs := append([]string{c.DB, "postgres"}, sc.extra...)
		slices.Sort(dbs)
		want[sc.name] = dbs
		orig[sc.name], sums[sc.name] = map[string]string{}, map[string]map[string]string{}
		for _, db := range dbs {
			c.Psql(t, db, shapeSeed(sc.name, db))
			orig[sc.name][db] = pgSums(t, c, db)
			sums[sc.name][db] = liveChecksums(t, c, db)
		}
	}
	t.Logf("%d containers started and seeded in %s", len(cases), time.Since(step).Round(time.Millisecond))

	env := newRepoEnv(t, 2)
	env["DOCKER_HOST"] = d.Host()
	env["SCALR_BACKUP_PATTERNS"] = "scalr-shape-*-db"
	env["SCALR_BACKUP_HOST"] = "shapes-host"
	noSecret := func(t *testing.T, what string, res result) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(res.stdout+res.stderr, s) {
				t.Errorf("%s: the output holds a database password", what)
			}
		}
	}
	run := func(name string, fn func(t *testing.T)) {
		step := time.Now()
		ok := t.Run(name, fn)
		t.Logf("%s: %s in %s", name, map[bool]string{true: "ok", false: "FAILED"}[ok], time.Since(step).Round(time.Millisecond))
	}

	// Every shape found, connected to, with every database.
	run("discover", func(t *testing.T) {
		found, res := discoverJSON(t, env)
		noSecret(t, "discover", res)
		if res.code != 0 || len(found) != len(cases) {
			t.Fatalf("discover: exit %d, %d targets\n%s\n%s", res.code, len(found), res.stdout, res.stderr)
		}
		for _, sc := range cases {
			tg := found[sc.name]
			c := containers[sc.name]
			if tg.Problem != "" || !slices.Equal(tg.Databases, want[sc.name]) || tg.User != c.User || tg.Database != c.DB ||
				tg.Port != sc.port || tg.PasswordFrom != sc.pwFrom || tg.SocketDir != "/var/run/postgresql" ||
				tg.PostgresMajor != c.Major || len(tg.LeftOut) != 0 {
				t.Errorf("%s: %+v", sc.name, tg)
			}
		}
		res = runCLI(t, env, nil, "discover")
		if res.code != 0 || !strings.Contains(res.stdout, "scalr-shape-pg17-db") || !strings.Contains(res.stdout, " 5433 ") {
			t.Errorf("discover:\n%s\n%s", res.stdout, res.stderr)
		}
	})

	// pg-backup and run: every database of each container, one snapshot
	// per container, the same set as discover's.
	run("pg-backup-and-run", func(t *testing.T) {
		res := runCLI(t, env, nil, "pg-backup", "--json")
		noSecret(t, "pg-backup", res)
		var lines []pgBackupResult
		if err := json.Unmarshal([]byte(res.stdout), &lines); err != nil || res.code != 0 || len(lines) != len(cases) {
			t.Fatalf("pg-backup --json: exit %d, %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
		}
		for _, l := range lines {
			if !l.OK || !slices.Equal(l.Databases, want[l.Container]) {
				t.Errorf("pg-backup of %s: %+v", l.Container, l)
			}
		}
		res = runCLI(t, env, nil, "run", "--json")
		noSecret(t, "run", res)
		var rep struct {
			OK      bool `json:"ok"`
			Targets []struct {
				Container, Status, Error string
				SnapshotID               string `json:"snapshot_id"`
			} `json:"targets"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil || res.code != 0 || !rep.OK || len(rep.Targets) != len(cases) {
			t.Fatalf("run --json: exit %d, %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
		}
		for _, tr := range rep.Targets {
			dbs, m := manifestDatabases(t, env, tr.Container)
			if tr.Status != "ok" || !strings.HasPrefix(m.Container, "scalr-shape-") || !slices.Equal(dbs, want[tr.Container]) ||
				len(m.LeftOut) != 0 || !slices.Equal(m.Selection, []string{"all"}) {
				t.Errorf("run: %s: %+v, databases %q", tr.Container, tr, dbs)
			}
			for _, db := range m.Databases {
				for _, tb := range db.Tables {
					if want := strings.SplitN(sums[tr.Container][db.Name][tb.QualifiedName()], ":", 2)[0]; fmt.Sprint(tb.Rows) != want {
						t.Errorf("%s/%s: %s: %d rows in the manifest, %s in the database", tr.Container, db.Name, tb.QualifiedName(), tb.Rows, want)
					}
				}
			}
		}
	})

	// Damage every database, restore, compare every table.
	run("restore", func(t *testing.T) {
		for _, sc := range cases {
			c := containers[sc.name]
			for _, db := range want[sc.name] {
				c.Psql(t, db, shapeDamage)
			}
			step := time.Now()
			res := runCLI(t, env, nil, "restore", "--yes", sc.name, "latest")
			noSecret(t, "restore", res)
			if res.code != 0 {
				t.Errorf("restore of %s: exit %d\n%s\n%s", sc.name, res.code, res.stdout, res.stderr)
				continue
			}
			for _, db := range want[sc.name] {
				if got := pgSums(t, c, db); got != orig[sc.name][db] {
					t.Errorf("%s/%s restored:\n%s\nwant:\n%s", sc.name, db, got, orig[sc.name][db])
				}
			}
			t.Logf("restore of %s (%d databases): %s", sc.name, len(want[sc.name]), time.Since(step).Round(time.Millisecond))
		}
	})

	// Drill every container: started as the live one was, every table's
	// count and checksum as in the live database.
	run("drill", func(t *testing.T) {
		volumes := d.CLI(t, "volume", "ls", "--quiet")
		step := time.Now()
		res := runCLI(t, env, nil, "drill", "--json")
		noSecret(t, "drill", res)
		var results []*pgstream.DrillResult
		if err := json.Unmarshal([]byte(res.stdout), &results); err != nil || res.code != 0 || len(results) != len(cases) {
			t.Fatalf("drill --json: exit %d, %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
		}
		t.Logf("%d drills in %s", len(results), time.Since(step).Round(time.Millisecond))
		for _, dr := range results {
			var dbs []string
			for _, db := range dr.Databases {
				dbs = append(dbs, db.Name)
				live := sums[dr.Container][db.Name]
				if len(db.Tables) != len(live) {
					t.Errorf("drill of %s/%s: %d tables, %d live", dr.Container, db.Name, len(db.Tables), len(live))
				}
				for _, tb := range db.Tables {
					q := (pgstream.TableCount{Schema: tb.Schema, Name: tb.Name}).QualifiedName()
					if !tb.OK || tb.Checksum == "" || tb.Checksum != live[q] {
						t.Errorf("drill of %s/%s: %s: %+v, live checksum %q", dr.Container, db.Name, q, tb, live[q])
					}
				}
			}
			if !dr.Passed || !slices.Equal(dbs, want[dr.Container]) {
				t.Errorf("drill of %s: passed %v, databases %q: %s", dr.Container, dr.Passed, dbs, dr.Error)
			}
			t.Logf("drill of %s: %.1fs", dr.Container, dr.DurationSeconds)
		}
		if left := d.CLI(t, "ps", "--all", "--quiet", "--filter", "name=scalr-drill-"); left != "" {
			t.Errorf("drill containers left behind: %s", left)
		}
		if after := d.CLI(t, "volume", "ls", "--quiet"); after != volumes {
			t.Errorf("volumes before the drills:\n%s\nafter:\n%s", volumes, after)
		}
	})

	// A 15 backup restores into a 17 container; a 17 backup is refused by
	// a 15 container before anything is touched.
	run("versions", func(t *testing.T) {
		c15, c17 := containers["scalr-shape-official-db"], containers["scalr-shape-pg17-db"]
		before := map[string]string{}
		for _, db := range want[c15.Name] {
			before[db] = pgSums(t, c15, db)
		}
		dbList := func(c *testenv.Container) string {
			return c.Psql(t, "postgres", `SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_database`)
		}
		dbs15 := dbList(c15)
		res := runCLI(t, env, nil, "restore", "--yes", "--into", c15.Name, c17.Name, "latest")
		if res.code == 0 || !strings.Contains(res.stderr, "newer major version") {
			t.Errorf("17 into 15: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		for _, db := range want[c15.Name] {
			if got := pgSums(t, c15, db); got != before[db] {
				t.Errorf("%s/%s changed by a refused restore", c15.Name, db)
			}
		}
		if got := dbList(c15); got != dbs15 {
			t.Errorf("databases after a refused restore: %s, were %s", got, dbs15)
		}
		res = runCLI(t, env, nil, "restore", "--yes", "--into", c17.Name, c15.Name, "latest")
		if res.code != 0 {
			t.Fatalf("15 into 17: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		for _, db := range want[c15.Name] {
			if got := pgSums(t, c17, db); got != orig[c15.Name][db] {
				t.Errorf("15 into 17: %s:\n%s\nwant:\n%s", db, got, orig[c15.Name][db])
			}
		}
		if v := c17.Psql(t, "app", "SHOW server_version_num"); !strings.HasPrefix(v, "17") {
			t.Errorf("the 17 container runs %s", v)
		}
	})

	// Restricted by the setting: the same container and database set in
	// discover, pg-backup, run and drill, the others reported left out.
	run("selection", func(t *testing.T) {
		multi := "scalr-shape-multi-db"
		// (The default, every database, is the subtests' above.)
		for _, sel := range []struct {
			name string
			env  map[string]string
			args []string
			want []string
		}{
			{"env POSTGRES_DB", map[string]string{"SCALR_BACKUP_DATABASES": "POSTGRES_DB"}, nil, []string{"app"}},
			{"flag patterns", nil, []string{"--databases", "re*,Kunden*", "--databases", "app"}, []string{shapeAwkward, "app", "reports"}},
		} {
			t.Run(sel.name, func(t *testing.T) {
				e := newRepoEnv(t, 2)
				e["DOCKER_HOST"], e["SCALR_BACKUP_HOST"] = d.Host(), "selection-host"
				e["SCALR_BACKUP_PATTERNS"] = multi
				maps.Copy(e, sel.env)
				var left []string
				for _, db := range want[multi] {
					if !slices.Contains(sel.want, db) {
						left = append(left, db)
					}
				}
				found, res := discoverJSON(t, e, sel.args...)
				tg := found[multi]
				// Left out as not selected; the databases the restore above
				// replaced are left out as kept by it.
				notSelected := func(l []pgstream.LeftOutDatabase) []string {
					var out []string
					for _, o := range l {
						switch {
						case strings.HasPrefix(o.Reason, "not in the selection "):
							out = append(out, o.Name)
						case o.Reason != pgstream.LeftOutReplaced:
							t.Errorf("left out %q: %s", o.Name, o.Reason)
						}
					}
					return out
				}
				gotLeft := notSelected(tg.LeftOut)
				if res.code != 0 || len(found) != 1 || !slices.Equal(tg.Databases, sel.want) || !slices.Equal(gotLeft, left) {
					t.Fatalf("discover: exit %d, %+v\n%s", res.code, tg, res.stderr)
				}
				if len(left) > 0 && (!strings.Contains(res.stderr, "container "+multi+": ") ||
					!strings.Contains(res.stderr, quoteIdentSQL(left[0])+": not in the selection")) {
					t.Errorf("discover does not name the databases left out:\n%s", res.stderr)
				}
				sets := map[string][]string{"discover": tg.Databases}

				res = runCLI(t, e, nil, append([]string{"pg-backup", "--json"}, sel.args...)...)
				var lines []pgBackupResult
				if err := json.Unmarshal([]byte(res.stdout), &lines); err != nil || res.code != 0 {
					t.Fatalf("pg-backup: exit %d %v\n%s", res.code, err, res.stderr)
				}
				for _, l := range lines {
					if l.Container == multi {
						sets["pg-backup"] = l.Databases
					}
				}
				sets["pg-backup snapshot"], _ = manifestDatabases(t, e, multi)
				if len(left) > 0 && !strings.Contains(res.stderr, "left out of its backups") {
					t.Errorf("pg-backup does not name the databases left out:\n%s", res.stderr)
				}

				res = runCLI(t, e, nil, append([]string{"run"}, sel.args...)...)
				if res.code != 0 {
					t.Fatalf("run: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
				}
				var m *pgstream.Manifest
				sets["run snapshot"], m = manifestDatabases(t, e, multi)
				if mLeft := notSelected(m.LeftOut); !slices.Equal(mLeft, left) {
					t.Errorf("the snapshot's manifest names %q as not selected, want %q", mLeft, left)
				}
				if len(left) > 0 && !strings.Contains(res.stderr, "left out of its backups") {
					t.Errorf("run does not name the databases left out:\n%s", res.stderr)
				}

				res = runCLI(t, e, nil, append([]string{"drill", "--json"}, sel.args...)...)
				var results []*pgstream.DrillResult
				if err := json.Unmarshal([]byte(res.stdout), &results); err != nil || res.code != 0 || len(results) != 1 {
					t.Fatalf("drill: exit %d %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
				}
				for _, dr := range results {
					if dr.Container == multi {
						var dbs []string
						for _, db := range dr.Databases {
							dbs = append(dbs, db.Name)
						}
						sets["drill"] = dbs
					}
				}
				for cmd, dbs := range sets {
					if !slices.Equal(dbs, sel.want) {
						t.Errorf("%s: databases %q, want %q", cmd, dbs, sel.want)
					}
				}
			})
		}
	})
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}

// waitLog waits until a container's log holds all of the lines given, in
// order.
func waitLog(t *testing.T, d *testenv.Docker, name string, lines ...string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, _ := d.Command(ctx, "logs", name).CombinedOutput()
		cancel()
		rest, ok := string(out), true
		for _, l := range lines {
			i := strings.Index(rest, l)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(l):]
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: %q not in its log:\n%s", name, lines, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestPostgresUnreachable: discover flags every selected container the
// tools cannot connect to (or back up), with the reason, and pg-backup and
// run fail them with it; a drill whose throwaway server refuses the
// connection for good fails at once and shows the container's log.
func TestPostgresUnreachable(t *testing.T) {
	testenv.Integration(t)
	begin := time.Now()
	d := testenv.StartDocker(t)
	official := d.PostgresImageShape(t, 15, testenv.ShapeOfficial)
	app := map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}
	env := newRepoEnv(t, 2)
	env["DOCKER_HOST"] = d.Host()
	env["SCALR_BACKUP_PATTERNS"] = "scalr-bad-*-db"
	env["SCALR_BACKUP_HOST"] = "bad-host"

	// The password changed on the server, not in the container's
	// environment; local connections need it.
	rotated := d.RunPostgresWith(t, "scalr-bad-rotated-db", testenv.PostgresOptions{Shape: testenv.ShapeOfficial,
		Env: map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app", "POSTGRES_INITDB_ARGS": "--auth-local=scram-sha-256 --no-sync"}})
	rotated.Psql(t, "", "ALTER ROLE app PASSWORD 'rotated elsewhere';")
	// The server moved its socket where nobody looks.
	moved := d.RunPostgresWith(t, "scalr-bad-socket-db", testenv.PostgresOptions{Shape: testenv.ShapeOfficial, Env: app})
	moved.Exec(t, nil, "sh", "-c", "mkdir -p /opt/pgsock && chown postgres /opt/pgsock")
	moved.Psql(t, "", "ALTER SYSTEM SET unix_socket_directories = '/opt/pgsock';")
	d.CLI(t, "restart", moved.Name)
	waitLog(t, d, moved.Name, "Skipping initialization", `listening on Unix socket "/opt/pgsock/.s.PGSQL.5432"`, "ready to accept connections")
	// Stopped.
	stopped := d.RunPostgresWith(t, "scalr-bad-stopped-db", testenv.PostgresOptions{Shape: testenv.ShapeOfficial, Env: app})
	d.CLI(t, "stop", stopped.Name)
	// No server at all in a Postgres image.
	d.CLI(t, "run", "--detach", "--network", "none", "--name", "scalr-bad-noserver-db", "--entrypoint", "sleep", official, "infinity")
	t.Cleanup(func() { d.CLI(t, "rm", "--force", "scalr-bad-noserver-db") })
	// POSTGRES_DB gone.
	gone := d.RunPostgresWith(t, "scalr-bad-gone-db", testenv.PostgresOptions{Shape: testenv.ShapeOfficial, Env: app})
	gone.Psql(t, "postgres", "DROP DATABASE app;")
	// Backed up while it worked, then re-created with local password
	// authentication and no password anywhere: nobody can connect.
	authName := "scalr-bad-auth-db"
	good := d.RunPostgresWith(t, authName, testenv.PostgresOptions{Shape: testenv.ShapeOfficial})
	good.Psql(t, "", "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 10);")
	if res := runCLI(t, env, nil, "pg-backup", authName); res.code != 0 {
		t.Fatalf("pg-backup of %s: %d\n%s\n%s", authName, res.code, res.stdout, res.stderr)
	}
	d.CLI(t, "rm", "--force", "--volumes", authName)
	d.CLI(t, "run", "--detach", "--network", "none", "--name", authName, "--stop-signal", "SIGINT",
		"--env", "POSTGRES_HOST_AUTH_METHOD=trust", "--env", "POSTGRES_INITDB_ARGS=--auth-local=scram-sha-256 --no-sync",
		official, "postgres", "-c", "fsync=off")
	waitLog(t, d, authName, "PostgreSQL init process complete", "ready to accept connections")
	t.Logf("containers ready in %s", time.Since(begin).Round(time.Millisecond))

	reasons := map[string][]string{
		"scalr-bad-rotated-db":  {`cannot connect to Postgres in container scalr-bad-rotated-db as role "app" on port 5432`, `password authentication failed for user "app"`},
		"scalr-bad-socket-db":   {"cannot connect to Postgres", `.s.PGSQL.5432" failed: No such file or directory`},
		"scalr-bad-stopped-db":  {"container is exited, not running"},
		"scalr-bad-noserver-db": {"cannot connect to Postgres", "No such file or directory"},
		"scalr-bad-gone-db":     {`database "app" (POSTGRES_DB) does not exist`},
		authName:                {"cannot connect to Postgres", "no password supplied"},
	}
	t.Run("discover", func(t *testing.T) {
		found, res := discoverJSON(t, env)
		if res.code == 0 || len(found) != len(reasons) || !strings.Contains(res.stderr, fmt.Sprintf("%d of %d selected containers cannot be backed up", len(reasons), len(reasons))) {
			t.Fatalf("discover: exit %d, %d targets\n%s\n%s", res.code, len(found), res.stdout, res.stderr)
		}
		for name, want := range reasons {
			for _, w := range want {
				if !strings.Contains(found[name].Problem, w) || !strings.Contains(res.stderr, name+": ") {
					t.Errorf("%s: problem %q, want %q", name, found[name].Problem, w)
				}
			}
		}
		res = runCLI(t, env, nil, "discover")
		if res.code == 0 || strings.Count(res.stdout, "CANNOT BACK UP") != len(reasons) {
			t.Errorf("discover:\n%s\n%s", res.stdout, res.stderr)
		}
		t.Logf("discover:\n%s%s", res.stdout, res.stderr)
	})
	t.Run("pg-backup-and-run", func(t *testing.T) {
		res := runCLI(t, env, nil, "pg-backup", "--json")
		var lines []pgBackupResult
		if err := json.Unmarshal([]byte(res.stdout), &lines); err != nil || res.code == 0 || len(lines) != len(reasons) {
			t.Fatalf("pg-backup: exit %d %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
		}
		for _, l := range lines {
			if l.OK || !strings.Contains(l.Error, reasons[l.Container][len(reasons[l.Container])-1]) {
				t.Errorf("pg-backup of %s: %+v", l.Container, l)
			}
		}
		res = runCLI(t, env, nil, "run", "--json")
		var rep struct {
			Targets []struct{ Container, Status, Error string } `json:"targets"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil || res.code == 0 || len(rep.Targets) != len(reasons) {
			t.Fatalf("run: exit %d %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
		}
		for _, tr := range rep.Targets {
			if tr.Status != "failed" || !strings.Contains(tr.Error, reasons[tr.Container][len(reasons[tr.Container])-1]) {
				t.Errorf("run: %+v", tr)
			}
		}
	})
	t.Run("drill-auth-error", func(t *testing.T) {
		start := time.Now()
		res := runCLI(t, env, nil, "drill", "--json", authName)
		took := time.Since(start)
		t.Logf("drill of %s: exit %d in %s\n%s", authName, res.code, took.Round(time.Millisecond), res.stderr)
		if took > 10*time.Second {
			t.Errorf("a drill against a permanent authentication error took %s", took)
		}
		var results []*pgstream.DrillResult
		if err := json.Unmarshal([]byte(res.stdout), &results); err != nil || res.code == 0 || len(results) != 1 || results[0].Passed {
			t.Fatalf("drill: exit %d %v\n%s", res.code, err, res.stdout)
		}
		for _, want := range []string{"no password supplied", "will not change", "last lines of the drill container's log:", "  | ", "database system is ready to accept connections"} {
			if !strings.Contains(results[0].Error, want) || !strings.Contains(res.stderr, want) {
				t.Errorf("the drill's error lacks %q:\n%s", want, results[0].Error)
			}
		}
		if left := d.CLI(t, "ps", "--all", "--quiet", "--filter", "name=scalr-drill-"); left != "" {
			t.Errorf("drill containers left behind: %s", left)
		}
	})
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}
