package pgstream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/pkg/stdcopy"

	"github.com/scalr-platform/scalr-backup/repo"
)

func pgContainer(name string, env []string, labels map[string]string) *fakeContainer {
	return &fakeContainer{name: name, env: env, labels: labels, running: true}
}

func TestDiscoverFiltering(t *testing.T) {
	f := newFakeDocker()
	pg := newFakePG()
	pg.versionText = "postgres (PostgreSQL) 14.11 (Debian 14.11-1)"
	pg.databases = []string{"app", "appdb", "postgres", "shop", "scalr_restore_20200101T000000Z_app", "app__replaced_20200101T000000Z", "frozen"}
	pg.closed = []string{"frozen"}
	f.handler = pg.handle
	env15 := []string{"PG_MAJOR=15", "POSTGRES_USER=app", "POSTGRES_DB=appdb", "POSTGRES_PASSWORD=not-shown"}
	f.add(pgContainer("scalr-app-db", env15, nil))
	f.add(pgContainer("scalr-shop-db", []string{"PG_MAJOR=16", "PG_VERSION=16.4-1.pgdg120+2", "POSTGRES_USER=shop"}, nil))
	f.add(pgContainer("scalr-auth-postgres", []string{"PG_MAJOR=15"}, nil))
	f.add(pgContainer("scalr-app-web", []string{"PG_MAJOR=15"}, nil))                                                              // decoy: name does not match
	f.add(pgContainer("legacy-postgres", []string{"PG_MAJOR=13"}, map[string]string{LabelBackup: "true"}))                         // opted in
	f.add(pgContainer("scalr-old-db", []string{"PG_MAJOR=15"}, map[string]string{LabelBackup: "false"}))                           // opted out
	f.add(pgContainer("scalr-odd-db", []string{"PG_MAJOR=15"}, map[string]string{LabelBackup: "perhaps"}))                         // bad label: by name
	f.add(pgContainer("scalr-probe-db", nil, nil))                                                                                 // version by exec
	f.add(pgContainer("scalr-all-db", []string{"PG_MAJOR=15"}, map[string]string{LabelAllDatabases: "true"}))                      // every database
	f.add(pgContainer("scalr-one-db", []string{"PG_MAJOR=15", "POSTGRES_DB=shop"}, map[string]string{LabelAllDatabases: "false"})) // POSTGRES_DB only
	f.add(pgContainer("scalr-sel-db", []string{"PG_MAJOR=15"}, map[string]string{LabelDatabases: "app*, shop"}))                   // by pattern
	f.add(pgContainer("scalr-gone-db", []string{"PG_MAJOR=15", "POSTGRES_DB=gone"}, nil))                                          // POSTGRES_DB missing
	f.add(&fakeContainer{name: "scalr-stopped-db", env: []string{"PG_MAJOR=15"}})                                                  // not running

	var warnings []string
	got, err := Discover(context.Background(), f, Options{Warn: func(s string) { warnings = append(warnings, s) }})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tg := range got {
		names = append(names, tg.Container)
	}
	want := []string{"legacy-postgres", "scalr-all-db", "scalr-app-db", "scalr-auth-postgres", "scalr-gone-db", "scalr-odd-db", "scalr-one-db", "scalr-probe-db", "scalr-sel-db", "scalr-shop-db", "scalr-stopped-db"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("discovered %q, want %q", names, want)
	}
	by := map[string]Target{}
	for _, tg := range got {
		by[tg.Container] = tg
		if (tg.Problem != "") != (tg.Container == "scalr-stopped-db" || tg.Container == "scalr-gone-db") {
			t.Errorf("%s: problem %q", tg.Container, tg.Problem)
		}
	}
	// A selected container that is not running is listed with its
	// problem, and backing it up fails naming it.
	if p := by["scalr-stopped-db"].Problem; !strings.Contains(p, "exited, not running") {
		t.Errorf("stopped container's problem %q", p)
	}
	if _, err := BackupContainer(context.Background(), f, memRepo(t), by["scalr-stopped-db"], BackupOptions{}); !errors.Is(err, ErrCannotBackUp) ||
		!strings.Contains(err.Error(), "scalr-stopped-db") || !strings.Contains(err.Error(), "not running") {
		t.Errorf("backup of a stopped container: %v", err)
	}
	// A container whose POSTGRES_DB is gone cannot be backed up: every
	// other database would be, the one it names silently not.
	if g := by["scalr-gone-db"]; !strings.Contains(g.Problem, `database "gone" (POSTGRES_DB) does not exist`) || g.User != "postgres" || g.Database != "gone" {
		t.Errorf("scalr-gone-db: %+v", g)
	}
	// By default every database that accepts connections, templates and
	// restores' leftovers excepted; the others are listed with the reason.
	every := []string{"app", "appdb", "postgres", "shop"}
	wantLeft := []LeftOutDatabase{
		{"app__replaced_20200101T000000Z", LeftOutReplaced},
		{"frozen", LeftOutNoConnect},
		{"scalr_restore_20200101T000000Z_app", LeftOutInterrupted},
	}
	if a := by["scalr-app-db"]; a.User != "app" || a.Database != "appdb" || !reflect.DeepEqual(a.Databases, every) ||
		!reflect.DeepEqual(a.LeftOut, wantLeft) || !a.AllDatabases || !reflect.DeepEqual(a.Selection, []string{SelectAll}) ||
		a.PostgresMajor != 15 || a.MatchedBy != "name scalr-*-db" || a.Image != "postgres:15" || a.ImageID == "" ||
		a.Port != DefaultPort || a.PasswordFrom != "POSTGRES_PASSWORD" {
		t.Errorf("scalr-app-db: %+v", a)
	}
	if s := by["scalr-shop-db"]; s.User != "shop" || s.Database != "shop" || s.PostgresMajor != 16 || s.PostgresVersion != "16.4" || s.PasswordFrom != "" {
		t.Errorf("scalr-shop-db: %+v", s)
	}
	if a := by["scalr-auth-postgres"]; a.User != "postgres" || a.Database != "postgres" || a.MatchedBy != "name scalr-auth-postgres" {
		t.Errorf("scalr-auth-postgres: %+v", a)
	}
	if l := by["legacy-postgres"]; l.MatchedBy != "label scalr.backup=true" || l.PostgresMajor != 13 {
		t.Errorf("legacy-postgres: %+v", l)
	}
	if p := by["scalr-probe-db"]; p.PostgresMajor != 14 || p.PostgresVersion != "14.11" {
		t.Errorf("scalr-probe-db: version by exec: %+v", p)
	}
	if a := by["scalr-all-db"]; !a.AllDatabases || !reflect.DeepEqual(a.Databases, every) {
		t.Errorf("scalr-all-db: %+v", a)
	}
	if o := by["scalr-one-db"]; o.AllDatabases || !reflect.DeepEqual(o.Databases, []string{"shop"}) || len(o.LeftOut) != 6 ||
		o.LeftOut[0] != (LeftOutDatabase{"app", "not in the selection POSTGRES_DB"}) {
		t.Errorf("scalr-one-db: %+v", o)
	}
	if o := by["scalr-sel-db"]; !reflect.DeepEqual(o.Databases, []string{"app", "appdb", "shop"}) || !reflect.DeepEqual(o.Selection, []string{"app*", "shop"}) {
		t.Errorf("scalr-sel-db: %+v", o)
	}
	var odd, left []string
	for _, w := range warnings {
		if strings.Contains(w, "left out of its backups") {
			left = append(left, w)
		} else {
			odd = append(odd, w)
		}
	}
	if len(odd) != 1 || !strings.Contains(odd[0], "scalr-odd-db") || !strings.Contains(odd[0], "perhaps") {
		t.Errorf("warnings %q", odd)
	}
	// Every container that can be backed up says what it leaves out.
	if len(left) != 9 || !slices.ContainsFunc(left, func(w string) bool {
		return strings.HasPrefix(w, `container scalr-one-db: 6 database(s) left out of its backups: "app": not in the selection POSTGRES_DB; "app__replaced_20200101T000000Z": kept aside by a restore`)
	}) {
		t.Errorf("left-out warnings %q", left)
	}
	for _, tg := range got {
		if b, _ := jsonMarshal(tg); strings.Contains(string(b), "not-shown") || strings.Contains(fmt.Sprintf("%+v %#v", tg, tg), "not-shown") {
			t.Errorf("a target's JSON or text holds the password: %s", b)
		}
	}
	// The password reaches the tools through their environment only.
	f.mu.Lock()
	for _, x := range f.execs {
		if x.container == "scalr-app-db" && x.opts.Cmd[0] == "psql" && !slices.Contains(x.opts.Env, "PGPASSWORD=not-shown") {
			t.Errorf("psql without the password in its environment: %q", x.opts.Env)
		}
		if strings.Contains(strings.Join(x.opts.Cmd, " "), "not-shown") {
			t.Errorf("the password on a command line: %q", x.opts.Cmd)
		}
	}
	f.mu.Unlock()

	// Custom patterns replace the defaults; labels still apply; a
	// selection restricts the databases of every container.
	got, err = Discover(context.Background(), f, Options{Patterns: []string{"*-web"}, Databases: []string{SelectPostgresDB}})
	if err != nil {
		t.Fatal(err)
	}
	names = nil
	for _, tg := range got {
		names = append(names, tg.Container)
		if tg.AllDatabases || !reflect.DeepEqual(tg.Databases, []string{"postgres"}) || len(tg.LeftOut) != 6 {
			t.Errorf("%s: the selection POSTGRES_DB not applied: %+v", tg.Container, tg)
		}
	}
	if !reflect.DeepEqual(names, []string{"legacy-postgres", "scalr-app-web"}) {
		t.Errorf("with pattern *-web: %q", names)
	}
	if _, err := Discover(context.Background(), f, Options{Patterns: []string{"["}}); err == nil {
		t.Error("bad pattern accepted")
	}
	if _, err := Discover(context.Background(), f, Options{Databases: []string{"a["}}); err == nil {
		t.Error("bad database pattern accepted")
	}
	// A name without wildcards must exist.
	tg, err := InspectTarget(context.Background(), f, "scalr-app-db", Options{Databases: []string{"shop", "nope"}})
	if !errors.Is(err, ErrDatabaseSelection) || !strings.Contains(err.Error(), `database "nope" (selected by name) does not exist`) || tg.User != "app" {
		t.Errorf("selection naming a missing database: %v %+v", err, tg)
	}
}

func TestMatchDatabase(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"Kunden*", `Kunden "Ärger" 100%/ü'x`, true},
		{"*/*", "a/b", true},
		{"a?b", "a/b", true},
		{"a/b", "a/b", true},
		{"a[/]b", "a/b", true},
		{"app_*", "app", false},
		{"app", "app2", false},
	} {
		if got := matchDatabase(c.pattern, c.name); got != c.want {
			t.Errorf("matchDatabase(%q, %q) = %v", c.pattern, c.name, got)
		}
	}
}

func TestParseDatabases(t *testing.T) {
	for in, want := range map[string][]string{
		"":                     nil,
		"all":                  {"all"},
		" POSTGRES_DB, app_* ": {"POSTGRES_DB", "app_*"},
		"a b\tc,d":             {"a", "b", "c", "d"},
	} {
		got, err := ParseDatabases(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseDatabases(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseDatabases("ok, [bad"); err == nil {
		t.Error("bad pattern accepted")
	}
}

func TestDiscoverNoPostgres(t *testing.T) {
	f := newFakeDocker()
	f.handler = func(x *execCall) int {
		fmt.Fprintf(x.Stderr, "OCI runtime exec failed: exec: %q: executable file not found in $PATH\n", x.Cmd[0])
		return 127
	}
	f.add(pgContainer("scalr-cache-db", []string{"REDIS_VERSION=7"}, nil))
	got, err := Discover(context.Background(), f, Options{})
	if err != nil || len(got) != 1 || got[0].Container != "scalr-cache-db" || !strings.Contains(got[0].Problem, "no Postgres found") {
		t.Fatalf("got %+v, %v", got, err)
	}
	_, err = InspectTarget(context.Background(), f, "scalr-cache-db", Options{})
	if !errors.Is(err, ErrToolMissing) {
		t.Errorf("InspectTarget of a container without Postgres: %v", err)
	}
	if _, err := InspectTarget(context.Background(), f, "nope", Options{}); !errors.Is(err, ErrNoContainer) {
		t.Errorf("missing container: %v", err)
	}
	f.add(&fakeContainer{name: "scalr-down-db", env: []string{"PG_MAJOR=15"}})
	if _, err := InspectTarget(context.Background(), f, "scalr-down-db", Options{}); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "scalr-down-db") {
		t.Errorf("stopped container: %v", err)
	}
}

// setupBackup is a fake container scalr-app-db with two databases.
func setupBackup(t *testing.T) (*fakeDocker, *fakePG, Target) {
	f := newFakeDocker()
	pg := newFakePG()
	pg.databases = []string{"app", "reports", "postgres"}
	pg.tables["app"] = `[{"schema" : "public", "name" : "users", "rows" : 3}, {"schema" : "public", "name" : "Überprüfung", "rows" : 2}]`
	pg.tables["reports"] = `[]`
	pg.dump["app"] = append([]byte("PGDMP"), bytes.Repeat([]byte("app data "), 200000)...)
	pg.dump["reports"] = []byte("PGDMP reports")
	f.handler = pg.handle
	f.add(pgContainer("scalr-app-db", []string{"PG_MAJOR=15", "POSTGRES_USER=app", "POSTGRES_DB=app", "POSTGRES_PASSWORD=secret-pw"}, nil))
	tg, err := InspectTarget(context.Background(), f, "scalr-app-db", Options{})
	if err != nil {
		t.Fatal(err)
	}
	tg.Databases = []string{"app", "reports"}
	return f, pg, tg
}

func TestBackupManifest(t *testing.T) {
	f, pg, tg := setupBackup(t)
	r := memRepo(t)
	when := time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC)
	res, err := BackupContainer(context.Background(), f, r, tg, BackupOptions{Hostname: "h1", Time: when, Tags: []string{"nightly"}})
	if err != nil {
		t.Fatal(err)
	}
	sn := res.Snapshot
	if !reflect.DeepEqual(sn.Paths, []string{"/scalr-app-db"}) || !reflect.DeepEqual(sn.Tags, []string{"scalr-app-db", "nightly"}) || sn.Hostname != "h1" || !sn.Time.Equal(when) {
		t.Fatalf("snapshot %+v", sn)
	}
	// Files, in order of the tree (sorted) and content.
	var files []string
	err = r.Walk(context.Background(), *sn.Tree, func(p string, n *repo.Node) error {
		if n.Type == repo.NodeFile {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{"/scalr-app-db/app.pgdump", "/scalr-app-db/globals.sql", "/scalr-app-db/manifest.json", "/scalr-app-db/reports.pgdump"}
	slices.Sort(files)
	if !reflect.DeepEqual(files, wantFiles) {
		t.Fatalf("files %q", files)
	}
	if got := readFile(t, r, sn, "/scalr-app-db/app.pgdump"); !bytes.Equal(got, pg.dump["app"]) {
		t.Fatalf("app.pgdump: %d bytes, want %d", len(got), len(pg.dump["app"]))
	}

	m, err := LoadManifest(context.Background(), r, sn)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pg.dump["app"])
	app := m.Database("app")
	if app == nil || app.File != "app.pgdump" || app.Size != int64(len(pg.dump["app"])) || app.SHA256 != hex.EncodeToString(sum[:]) ||
		app.PGSnapshot != pg.snapshot || app.Encoding != "UTF8" || app.SizeOnServer != 7000000 {
		t.Fatalf("manifest app: %+v", app)
	}
	wantTables := []TableCount{{"public", "users", 3}, {"public", "Überprüfung", 2}}
	if !reflect.DeepEqual(app.Tables, wantTables) {
		t.Errorf("tables %+v", app.Tables)
	}
	if rep := m.Database("reports"); rep == nil || rep.Tables == nil || len(rep.Tables) != 0 {
		t.Errorf("reports: %+v", rep)
	}
	if m.Container != "scalr-app-db" || m.User != "app" || m.PostgresMajor != 15 || m.ServerVersionNum != 150018 ||
		m.Globals == nil || m.Globals.Size != int64(len(pg.globals)) || m.Globals.RolePasswords || !reflect.DeepEqual(m.PgDumpArgs, DefaultPgDumpArgs) {
		t.Errorf("manifest %+v", m)
	}
	if strings.Contains(string(readFile(t, r, sn, "/scalr-app-db/manifest.json")), "secret-pw") {
		t.Error("the manifest holds the password")
	}

	// pg_dump ran in the exported snapshot, with the default format
	// options, the user and the database; pg_dumpall without passwords.
	if len(pg.dumpArgs) != 2 {
		t.Fatalf("pg_dump ran %d times", len(pg.dumpArgs))
	}
	args := pg.dumpArgs[0]
	for _, want := range []string{"-Fc", "-Z0", "--snapshot=" + pg.snapshot, "--username=app", "--dbname=dbname='app' user='app' application_name='scalr-backup-dump-" + pg.snapshot + "'"} {
		if !slices.Contains(args, want) {
			t.Errorf("pg_dump args %q lack %q", args, want)
		}
	}
	var dumpall []string
	for _, c := range f.execLog {
		if c[0] == "pg_dumpall" {
			dumpall = c
		}
		for _, a := range c {
			if strings.Contains(a, "secret-pw") {
				t.Errorf("a password in argv: %q", c)
			}
		}
	}
	if !slices.Contains(dumpall, "--globals-only") || !slices.Contains(dumpall, "--no-role-passwords") {
		t.Errorf("pg_dumpall %q", dumpall)
	}
	// The counts ran after BEGIN ... REPEATABLE READ and before COMMIT, in
	// one session per database.
	var order []string
	for _, s := range pg.sqlSeen {
		switch {
		case strings.HasPrefix(s, "BEGIN ISOLATION LEVEL REPEATABLE READ"):
			order = append(order, "begin")
		case strings.Contains(s, "query_to_xml"):
			order = append(order, "count")
		case strings.HasPrefix(s, "COMMIT"):
			order = append(order, "commit")
		}
	}
	if !reflect.DeepEqual(order, []string{"begin", "count", "commit", "begin", "count", "commit"}) {
		t.Errorf("statement order %q", order)
	}

	// Role passwords on request; custom dump arguments are kept.
	res, err = BackupContainer(context.Background(), f, r, tg, BackupOptions{RolePasswords: true, PgDumpArgs: []string{"-Fc", "-Z6"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Manifest.Globals.RolePasswords || !reflect.DeepEqual(res.Manifest.PgDumpArgs, []string{"-Fc", "-Z6"}) {
		t.Errorf("manifest %+v", res.Manifest)
	}
}

func readFile(t *testing.T, r *repo.Repository, sn *repo.Snapshot, p string) []byte {
	t.Helper()
	b, err := readSmallFile(context.Background(), r, sn, p, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBackupFailures: every way a dump can fail leaves no snapshot, and
// the error names the container and carries the tool's message.
func TestBackupFailures(t *testing.T) {
	// A failing tool in a container that runs on: no need to wait for the
	// engine to report it stopped.
	defer func(w time.Duration) { stopWait = w }(stopWait)
	stopWait = 50 * time.Millisecond
	cases := []struct {
		name  string
		setup func(f *fakeDocker, pg *fakePG, tg *Target)
		want  []string
		is    error
	}{
		{"pg_dump exits 1", func(f *fakeDocker, pg *fakePG, _ *Target) {
			pg.dumpHook = func(x *execCall) (int, bool) {
				x.Stdout.Write([]byte("PGDMP partial"))
				fmt.Fprintln(x.Stderr, `pg_dump: error: Dumping the contents of table "users" failed: PQgetResult() failed.`)
				fmt.Fprintln(x.Stderr, "pg_dump: detail: FATAL:  terminating connection due to administrator command")
				return 1, true
			}
		}, []string{"scalr-app-db", "pg_dump", "exit code 1", "terminating connection due to administrator command", "no snapshot was saved"}, nil},
		{"stream cut inside a frame", func(f *fakeDocker, pg *fakePG, _ *Target) {
			pg.dumpHook = func(x *execCall) (int, bool) {
				x.Stdout.Write([]byte("PGDMP whole frame"))
				var hdr [8]byte
				hdr[0] = byte(stdcopy.Stdout)
				binary.BigEndian.PutUint32(hdr[4:], 1000)
				x.Raw.Write(hdr[:])
				x.Raw.Write([]byte("only part of it"))
				return 0, true
			}
		}, []string{"scalr-app-db", "ended in the middle of its output"}, nil},
		{"engine error in the stream", func(f *fakeDocker, pg *fakePG, _ *Target) {
			pg.dumpHook = func(x *execCall) (int, bool) {
				x.Stdout.Write([]byte("PGDMP"))
				stdcopy.NewStdWriter(x.Raw, stdcopy.Systemerr).Write([]byte("container gone"))
				return 0, true
			}
		}, []string{"scalr-app-db", "container gone"}, nil},
		{"pg_dump missing", func(f *fakeDocker, pg *fakePG, _ *Target) {
			pg.dumpHook = func(x *execCall) (int, bool) {
				fmt.Fprintln(x.Stderr, `OCI runtime exec failed: exec failed: unable to start container process: exec: "pg_dump": executable file not found in $PATH: unknown`)
				return 126, true
			}
		}, []string{"pg_dump could not be run in container scalr-app-db", "Postgres container"}, ErrToolMissing},
		{"container stops mid-dump", func(f *fakeDocker, pg *fakePG, _ *Target) {
			pg.dumpHook = func(x *execCall) (int, bool) {
				x.Stdout.Write([]byte("PGDMP some"))
				f.setRunning("scalr-app-db", false, 137)
				return 137, true
			}
		}, []string{"scalr-app-db is exited", "exit code 137"}, ErrNotRunning},
		{"database missing", func(f *fakeDocker, pg *fakePG, tg *Target) {
			tg.Databases = []string{"app", "gone"}
		}, []string{`"gone"`, "scalr-app-db", "does not exist"}, ErrDatabaseMissing},
		{"empty dump", func(f *fakeDocker, pg *fakePG, _ *Target) {
			pg.dump["app"] = nil
		}, []string{"app.pgdump", "empty"}, repo.ErrEmptyStream},
		{"row counts fail", func(f *fakeDocker, pg *fakePG, _ *Target) {
			pg.countErr = `psql:<stdin>:12: ERROR:  permission denied for table "audit"`
		}, []string{"scalr-app-db", "counting the rows of database", `permission denied for table "audit"`, "no snapshot was saved"}, nil},
		{"globals fail", func(f *fakeDocker, pg *fakePG, _ *Target) {
			prev := f.handler
			f.handler = func(x *execCall) int {
				if x.Cmd[0] == "pg_dumpall" {
					fmt.Fprintln(x.Stderr, "pg_dumpall: error: query failed: permission denied for table pg_authid")
					return 1
				}
				return prev(x)
			}
		}, []string{"pg_dumpall in container scalr-app-db failed", "permission denied for table pg_authid"}, nil},
		{"stopped before the backup", func(f *fakeDocker, pg *fakePG, _ *Target) {
			f.setRunning("scalr-app-db", false, 0)
		}, []string{"scalr-app-db", "not running"}, ErrNotRunning},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, pg, tg := setupBackup(t)
			tc.setup(f, pg, &tg)
			r := memRepo(t)
			_, err := BackupContainer(context.Background(), f, r, tg, BackupOptions{})
			if err == nil {
				t.Fatal("backup succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error is not %v: %v", tc.is, err)
			}
			if strings.Contains(err.Error(), "secret-pw") {
				t.Errorf("error holds the password: %v", err)
			}
			if n := countSnapshots(t, r); n != 0 {
				t.Errorf("%d snapshots after a failed backup", n)
			}
		})
	}
}

func TestBackupRefusesBadDumpArgs(t *testing.T) {
	for _, args := range [][]string{{"-f", "/tmp/x"}, {"--file=/tmp/x"}, {"-j4"}, {"-Fd"}, {"--format=directory"}, {"--snapshot=x"}, {"app"}, {"-dapp"}, {"-Uroot"}, {"-W"}} {
		if err := checkPgDumpArgs(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
	for _, args := range [][]string{{"-Fc", "-Z0"}, {"-Fc", "-Z6", "--no-comments"}, {"--format=custom"}, {"-Ft"}, {"--exclude-table-data=logs"}, {"-Fp"}} {
		if err := checkPgDumpArgs(args); err != nil {
			t.Errorf("%q refused: %v", args, err)
		}
	}
}

func TestExecWaitsForExitCode(t *testing.T) {
	f, _, tg := setupBackup(t)
	f.stillRunningPolls = 3 // the engine reports the exit a moment late
	r := memRepo(t)
	if _, err := BackupContainer(context.Background(), f, r, tg, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestStderrTailBounded(t *testing.T) {
	f, pg, tg := setupBackup(t)
	pg.dumpHook = func(x *execCall) (int, bool) {
		for i := 0; i < 5000; i++ {
			fmt.Fprintf(x.Stderr, "pg_dump: warning line %d of many\n", i)
		}
		fmt.Fprintln(x.Stderr, "pg_dump: error: the last word")
		return 1, true
	}
	_, err := BackupContainer(context.Background(), f, memRepo(t), tg, BackupOptions{})
	if err == nil || !strings.Contains(err.Error(), "the last word") || strings.Contains(err.Error(), "line 0 of many") {
		t.Fatalf("error %.300q", err)
	}
	if len(err.Error()) > stderrKeep+1024 {
		t.Fatalf("error is %d bytes long", len(err.Error()))
	}
}

func TestManifestJSON(t *testing.T) {
	m := &Manifest{
		Format: ManifestFormat, Container: "scalr-app-db", Image: "postgres:15", PostgresMajor: 15,
		Databases: []DatabaseDump{{Name: "a/b%c", File: DumpFileName("a/b%c"), Size: 10, SHA256: "00",
			Tables: []TableCount{{"public", "t", 1}}}},
		Globals: &GlobalsDump{File: GlobalsFile},
	}
	if m.Databases[0].File != "a%2Fb%25c.pgdump" {
		t.Fatalf("file name %q", m.Databases[0].File)
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"format"`, `"container"`, `"image"`, `"postgres_major"`, `"server_version"`, `"databases"`, `"tables"`, `"rows"`, `"sha256"`, `"size"`, `"pg_snapshot"`, `"globals"`, `"role_passwords"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("manifest JSON lacks %s:\n%s", key, b)
		}
	}
	back, err := ParseManifest(b)
	if err != nil || !reflect.DeepEqual(back, m) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, back, m)
	}
	for name, bad := range map[string]string{
		"not json":     "{",
		"other format": `{"format":"x","container":"c","databases":[{"name":"a","file":"a.pgdump"}]}`,
		"no databases": `{"format":"` + ManifestFormat + `","container":"c","databases":[]}`,
		"file escapes": `{"format":"` + ManifestFormat + `","container":"c","databases":[{"name":"a","file":"../a.pgdump"}]}`,
		"file twice":   `{"format":"` + ManifestFormat + `","container":"c","databases":[{"name":"a","file":"a.pgdump"},{"name":"b","file":"a.pgdump"}]}`,
	} {
		if _, err := ParseManifest([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := (TableCount{Schema: "public", Name: "Überprüfung"}).QualifiedName(); got != `public."Überprüfung"` {
		t.Errorf("QualifiedName %q", got)
	}
	if got := (TableCount{Schema: "public", Name: "users_2"}).QualifiedName(); got != "public.users_2" {
		t.Errorf("QualifiedName %q", got)
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]struct {
		major int
		v     string
	}{
		"15.18-1.pgdg120+1":                            {15, "15.18"},
		" (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)": {15, "15.18"},
		"16":      {16, "16"},
		"9.6.24":  {9, "9.6.24"},
		"17beta2": {17, "17"},
		"none":    {0, ""},
	} {
		if m, v := parseVersion(in); m != want.major || v != want.v {
			t.Errorf("parseVersion(%q) = %d %q", in, m, v)
		}
	}
}

func TestConninfoQuoting(t *testing.T) {
	got := conninfo(`it's a \ db=x`, "app")
	if got != `dbname='it\'s a \\ db=x' user='app' application_name='scalr-backup'` {
		t.Fatalf("%s", got)
	}
	if dbOf([]string{"--dbname=" + conninfo("o'k", "u")}) != "o'k" {
		t.Fatal("fake's dbOf")
	}
	if quoteIdent(`a"b`) != `"a""b"` || quoteLiteral("it's") != "'it''s'" {
		t.Fatal("quoting")
	}
}

func TestCompareCounts(t *testing.T) {
	want := []TableCount{{"public", "a", 1}, {"public", "b", 2}, {"s", "c", 0}}
	got := []TableCount{{"public", "a", 1}, {"public", "b", 3}, {"public", "extra", 5}}
	checks := CompareCounts(want, got)
	res := &RestoreResult{Databases: []DatabaseCheck{{Name: "app", Tables: checks}}}
	mm := res.Mismatches()
	if len(checks) != 4 || len(mm) != 3 {
		t.Fatalf("%+v %q", checks, mm)
	}
	for i, w := range []string{"public.b: 2 rows in the manifest, 3 restored", "s.c: 0 rows in the manifest, table missing", "public.extra: not in the manifest, 5 rows restored"} {
		if !strings.Contains(mm[i], w) {
			t.Errorf("mismatch %d: %q lacks %q", i, mm[i], w)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 20}
	io.WriteString(b, "first line\nsecond line\nthird line\n")
	if s := b.String(); s != "…third line\n" {
		t.Fatalf("%q", s)
	}
}

func TestConnectErrors(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	try := func(host string) error {
		_, err := Connect(ctx, func(k string) string {
			if k == "DOCKER_HOST" {
				return host
			}
			return ""
		})
		if err == nil {
			t.Fatalf("%s: connected", host)
		}
		if !errors.Is(err, ErrDockerUnavailable) {
			t.Errorf("%s: %v is not ErrDockerUnavailable", host, err)
		}
		return err
	}
	missing := filepath.Join(dir, "missing.sock")
	if err := try("unix://" + missing); !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing socket: %v", err)
	}
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	if err := try("unix://" + plain); !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("not a socket: %v", err)
	}
	dead := filepath.Join(dir, "dead.sock")
	l, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if err := try("unix://" + dead); !strings.Contains(err.Error(), "nothing listens on the Docker socket "+dead) {
		t.Errorf("dead socket: %v", err)
	}
	// Permission denied: as an unprivileged user (the test binary runs
	// itself as nobody when the test runs as root).
	locked := filepath.Join(dir, "locked.sock")
	ll, err := net.Listen("unix", locked)
	if err != nil {
		t.Fatal(err)
	}
	defer ll.Close()
	if err := os.Chmod(locked, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if err := try("unix://" + locked); !strings.Contains(err.Error(), "permission denied on the Docker socket "+locked) {
			t.Errorf("locked socket: %v", err)
		}
		return
	}
	out := runAsNobody(t, dir, "TestConnectPermissionHelper", "PGSTREAM_HELPER_SOCKET="+locked)
	if !strings.Contains(out, "permission denied on the Docker socket "+locked) || !strings.Contains(out, "group id 0") {
		t.Errorf("locked socket, as nobody: %s", out)
	}
}

// TestConnectPermissionHelper is run by TestConnectErrors as nobody.
func TestConnectPermissionHelper(t *testing.T) {
	sock := os.Getenv("PGSTREAM_HELPER_SOCKET")
	if sock == "" {
		t.Skip("helper for TestConnectErrors")
	}
	_, err := Connect(context.Background(), func(k string) string {
		if k == "DOCKER_HOST" {
			return "unix://" + sock
		}
		return ""
	})
	fmt.Printf("CONNECT ERROR: %v\n", err)
}

// runAsNobody runs this test binary's test named run as the user nobody,
// from a copy in dir (made world-readable), and returns its output.
func runAsNobody(t *testing.T, dir, run string, env ...string) string {
	t.Helper()
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Skipf("cannot read the test binary: %v", err)
	}
	bindir, err := os.MkdirTemp("", "pgstream-helper-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bindir)
	bin := filepath.Join(bindir, "helper.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{bindir, dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-test.run=^"+run+"$", "-test.v")
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s as nobody: %v\n%s", run, err, out)
	}
	return string(out)
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
