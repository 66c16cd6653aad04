package pgstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

// backedUp is a fake container with one backup in a memory repository.
func backedUp(t *testing.T) (*fakeDocker, *fakePG, *repo.Repository, *Result) {
	t.Helper()
	f, pg, tg := setupBackup(t)
	r := memRepo(t)
	res, err := BackupContainer(context.Background(), f, r, tg, BackupOptions{Hostname: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	return f, pg, r, res
}

// restoredInto returns what pg_restore read while connected to a side
// database of db, and that database's name.
func restoredInto(pg *fakePG, db string) ([]byte, string) {
	for name, b := range pg.restoreIn {
		if strings.HasPrefix(name, sidePrefix) && sideOf(name) == db {
			return b, name
		}
	}
	return nil, ""
}

func TestRestoreFake(t *testing.T) {
	f, pg, r, res := backedUp(t)
	var confirmed *RestorePlan
	rr, err := Restore(context.Background(), f, r, "scalr-app-db", "latest", RestoreOptions{
		Databases: []string{"app"},
		Confirm:   func(p *RestorePlan) error { confirmed = p; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if confirmed == nil || confirmed.Target != "scalr-app-db" || confirmed.TargetUser != "app" || len(confirmed.Databases) != 1 ||
		confirmed.Snapshot.ID != res.SnapshotID {
		t.Fatalf("plan %+v", confirmed)
	}
	// pg_restore got the dump, whole, connected to a side database, with
	// --no-owner and without --create; the live database was never dropped
	// but renamed aside in the swap.
	got, side := restoredInto(pg, "app")
	if !bytes.Equal(got, pg.dump["app"]) {
		t.Fatalf("pg_restore read %d bytes into %q, want %d", len(got), side, len(pg.dump["app"]))
	}
	var restoreCmd []string
	for _, c := range f.execLog {
		if c[0] == "pg_restore" && !slices.Contains(c, "--schema-only") {
			restoreCmd = c
		}
	}
	for _, want := range []string{"--exit-on-error", "--no-owner", "--username=app"} {
		if !slices.Contains(restoreCmd, want) {
			t.Errorf("pg_restore %q lacks %q", restoreCmd, want)
		}
	}
	if slices.Contains(restoreCmd, "--create") {
		t.Errorf("pg_restore %q restores in place", restoreCmd)
	}
	var renames []string
	for _, s := range pg.sqlSeen {
		if strings.HasPrefix(s, "DROP DATABASE") && !strings.Contains(s, sidePrefix) {
			t.Errorf("dropped a live database: %q", s)
		}
		if strings.Contains(s, " RENAME TO ") {
			renames = append(renames, s)
		}
	}
	prev := rr.Databases[0].Previous
	if !strings.HasPrefix(prev, "app__replaced_") || len(renames) != 2 ||
		renames[0] != "ALTER DATABASE \"app\" RENAME TO \""+prev+"\";\n" || renames[1] != "ALTER DATABASE \""+side+"\" RENAME TO \"app\";\n" {
		t.Errorf("previous %q, renames %q", prev, renames)
	}
	if len(rr.Databases) != 1 || len(rr.Databases[0].Tables) != 2 || len(rr.Mismatches()) != 0 {
		t.Errorf("result %+v", rr.Databases)
	}

	// A confirmation that says no stops before anything happens.
	pg.sqlSeen = nil
	no := errors.New("no")
	if _, err := Restore(context.Background(), f, r, "scalr-app-db", res.SnapshotID.Str(), RestoreOptions{Confirm: func(*RestorePlan) error { return no }}); !errors.Is(err, no) {
		t.Fatalf("declined: %v", err)
	}
	for _, s := range pg.sqlSeen {
		if !strings.Contains(s, "'version_num', current_setting") { // the preflight's read-only look
			t.Fatalf("statements ran after the confirmation was declined: %q", pg.sqlSeen)
		}
	}

	// Counts that differ name the table, and are never swapped in: the
	// side database is dropped.
	pg.restored["app"] = `[{"schema" : "public", "name" : "users", "rows" : 2}, {"schema" : "public", "name" : "Überprüfung", "rows" : 2}]`
	pg.sqlSeen = nil
	rr, err = Restore(context.Background(), f, r, "scalr-app-db", "latest", RestoreOptions{Databases: []string{"app"}})
	if !errors.Is(err, ErrCountMismatch) || !strings.Contains(err.Error(), "public.users: 3 rows in the manifest, 2 restored") || rr == nil {
		t.Fatalf("mismatch: %v", err)
	}
	for _, s := range pg.sqlSeen {
		if strings.Contains(s, " RENAME TO ") {
			t.Errorf("swapped a database whose counts differ: %q", s)
		}
	}
	if slices.ContainsFunc(pg.databases, func(d string) bool { return strings.HasPrefix(d, sidePrefix) }) {
		t.Errorf("side database left: %q", pg.databases)
	}
	delete(pg.restored, "app")

	// The preflight refuses, before anything is created: an extension
	// the target lacks, a role it lacks, no room.
	pg.schemaText = "--\n-- Name: postgis; Type: EXTENSION; Schema: -; Owner: -\n--\n\nCREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public;\n" +
		"--\n-- Name: TABLE t; Type: ACL; Schema: public; Owner: app\n--\n\nGRANT SELECT ON TABLE public.t TO auditor;\n"
	pg.freeKB = 1000
	pg.sqlSeen = nil
	_, err = Restore(context.Background(), f, r, "scalr-app-db", "latest", RestoreOptions{Databases: []string{"app"}})
	if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "extension(s) postgis") || !strings.Contains(err.Error(), "role(s) auditor") ||
		!strings.Contains(err.Error(), "not enough room") {
		t.Fatalf("preflight: %v", err)
	}
	for _, s := range pg.sqlSeen {
		if !strings.Contains(s, "'version_num', current_setting") {
			t.Errorf("statement after a refused preflight: %q", s)
		}
	}
	// In place needs no room for a side copy; the other problems stand.
	_, err = Restore(context.Background(), f, r, "scalr-app-db", "latest", RestoreOptions{Databases: []string{"app"}, InPlace: true})
	if !errors.Is(err, ErrPreflight) || strings.Contains(err.Error(), "not enough room") {
		t.Fatalf("preflight in place: %v", err)
	}
	pg.schemaText, pg.freeKB = "", 50<<20

	// Asking for a database the snapshot lacks, a snapshot of another
	// container, a container that is not there.
	if _, err := PlanRestore(context.Background(), f, r, "scalr-app-db", "latest", RestoreOptions{Databases: []string{"nope"}}); !errors.Is(err, ErrDatabaseMissing) || !strings.Contains(err.Error(), "app, reports") {
		t.Errorf("missing database: %v", err)
	}
	f.add(pgContainer("scalr-other-db", []string{"PG_MAJOR=15"}, nil))
	if _, err := PlanRestore(context.Background(), f, r, "scalr-other-db", res.SnapshotID.String(), RestoreOptions{}); !errors.Is(err, repo.ErrNoSnapshot) || !strings.Contains(err.Error(), "not a backup of container scalr-other-db") ||
		!strings.Contains(err.Error(), "it is a backup of container scalr-app-db made on host h1; to restore it into scalr-other-db: scalr-backup restore scalr-app-db "+res.SnapshotID.Str()+" --into scalr-other-db") {
		t.Errorf("other container's snapshot: %v", err)
	}
	if _, err := PlanRestore(context.Background(), f, r, "scalr-other-db", "latest", RestoreOptions{}); !errors.Is(err, repo.ErrNoSnapshot) || !strings.Contains(err.Error(), "no backup of container scalr-other-db") {
		t.Errorf("no backup: %v", err)
	}
	if _, err := PlanRestore(context.Background(), f, r, "scalr-gone-db", "latest", RestoreOptions{}); !errors.Is(err, ErrNoContainer) {
		t.Errorf("missing container: %v", err)
	}
}

func TestRestorePostgresUsesTemplate1(t *testing.T) {
	f := newFakeDocker()
	pg := newFakePG()
	pg.databases = []string{"postgres"}
	pg.dump["postgres"] = []byte("PGDMP the postgres database")
	f.handler = pg.handle
	f.add(pgContainer("scalr-auth-postgres", []string{"PG_MAJOR=15"}, nil))
	tg, err := InspectTarget(context.Background(), f, "scalr-auth-postgres", Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := memRepo(t)
	if _, err := BackupContainer(context.Background(), f, r, tg, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(context.Background(), f, r, "scalr-auth-postgres", "latest", RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := restoredInto(pg, "postgres"); !bytes.Equal(got, pg.dump["postgres"]) {
		t.Fatalf("pg_restore did not get the dump: %q", pg.restoreIn)
	}
	// The swap renames "postgres": connected to template1.
	for _, s := range pg.sqlSeen {
		if strings.Contains(s, `ALTER DATABASE "postgres" RENAME`) {
			return
		}
	}
	t.Fatalf("postgres was not swapped: %q", pg.sqlSeen)
}

func TestRestoreRefusesPlainDump(t *testing.T) {
	f, pg, tg := setupBackup(t)
	pg.dump["app"] = []byte("--\n-- PostgreSQL database dump\n--\n")
	r := memRepo(t)
	if _, err := BackupContainer(context.Background(), f, r, tg, BackupOptions{PgDumpArgs: []string{"-Fp"}}); err != nil {
		t.Fatal(err)
	}
	pg.sqlSeen = nil
	_, err := Restore(context.Background(), f, r, "scalr-app-db", "latest", RestoreOptions{})
	if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "not a pg_dump custom-format archive") {
		t.Fatalf("plain dump: %v", err)
	}
	for _, s := range pg.sqlSeen {
		if strings.HasPrefix(s, "DROP") {
			t.Fatal("dropped a database before refusing")
		}
	}
}

func TestDrillFake(t *testing.T) {
	f, pg, r, res := backedUp(t)
	dr, err := Drill(context.Background(), f, r, "scalr-app-db", DrillOptions{Hostname: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	if !dr.Passed || dr.Snapshot != res.SnapshotID.String() || len(dr.Databases) != 2 || dr.RecordID.IsNull() {
		t.Fatalf("drill %+v", dr)
	}
	if len(f.created) != 1 || !strings.HasPrefix(f.created[0], "scalr-drill-scalr-app-db-") || !slices.Equal(f.created, f.removed) {
		t.Fatalf("created %q removed %q", f.created, f.removed)
	}
	// The throwaway container: same image, same environment, same command
	// (the live container's, not one of the drill's own), opted out of
	// discovery; crash safety switched off through the server.
	cfg := f.createdConfig[f.created[0]]
	live := f.get("scalr-app-db")
	if !slices.Equal(cfg.Env, live.env) || !slices.Equal(cfg.Cmd, live.cmd) ||
		cfg.Labels[LabelBackup] != "false" || cfg.Labels[LabelDrillOf] != "scalr-app-db" ||
		!strings.HasPrefix(cfg.Image, "sha256:") {
		t.Errorf("drill container config %+v", cfg)
	}
	if !slices.ContainsFunc(pg.sqlSeen, func(s string) bool { return strings.HasPrefix(s, "ALTER SYSTEM SET fsync = off;") }) {
		t.Errorf("crash safety not switched off: %q", pg.sqlSeen)
	}
	// Every restored table's checksum is recorded.
	for _, db := range dr.Databases {
		for _, tb := range db.Tables {
			if !strings.HasPrefix(tb.Checksum, fmt.Sprint(tb.Restored)+":") {
				t.Errorf("%s.%s: checksum %q", db.Name, tb.Name, tb.Checksum)
			}
		}
	}
	sn, err := r.FindSnapshot(context.Background(), "latest", repo.SnapshotFilter{Tags: []string{"drill,drill-of:scalr-app-db,drill-passed"}})
	if err != nil || sn.ID != dr.RecordID || sn.Paths[0] != "/drill/scalr-app-db.json" {
		t.Fatalf("record snapshot %v %+v", err, sn)
	}
	rec := readFile(t, r, sn, "/drill/scalr-app-db.json")
	if !bytes.Contains(rec, []byte(`"passed": true`)) || bytes.Contains(rec, []byte("secret-pw")) {
		t.Fatalf("record %s", rec)
	}
	// The container's latest backup is still the backup, not the record.
	if _, m, err := FindBackup(context.Background(), r, "scalr-app-db", "latest", ""); err != nil || m.Container != "scalr-app-db" {
		t.Fatalf("FindBackup after a drill: %v", err)
	}

	// A failing drill: the table is named, the container still removed,
	// the record says so.
	pg.restored["app"] = `[{"schema" : "public", "name" : "users", "rows" : 2}, {"schema" : "public", "name" : "Überprüfung", "rows" : 2}]`
	dr, err = Drill(context.Background(), f, r, "scalr-app-db", DrillOptions{})
	if !errors.Is(err, ErrCountMismatch) || !strings.Contains(err.Error(), "public.users") || dr.Passed {
		t.Fatalf("failing drill: %v %+v", err, dr)
	}
	if len(f.created) != 2 || !slices.Equal(f.created, f.removed) {
		t.Fatalf("created %q removed %q", f.created, f.removed)
	}
	if _, err := r.FindSnapshot(context.Background(), "latest", repo.SnapshotFilter{Tags: []string{"drill,drill-of:scalr-app-db,drill-failed"}}); err != nil {
		t.Fatalf("no failed-drill record: %v", err)
	}

	// Restore fails inside the throwaway container: still removed.
	prev := f.handler
	f.handler = func(x *execCall) int {
		if x.Cmd[0] == "pg_restore" {
			fmt.Fprintln(x.Stderr, "pg_restore: error: could not execute query: ERROR:  boom")
			return 1
		}
		return prev(x)
	}
	if _, err := Drill(context.Background(), f, r, "scalr-app-db", DrillOptions{NoRecord: true}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("drill with failing pg_restore: %v", err)
	}
	if len(f.created) != 3 || !slices.Equal(f.created, f.removed) {
		t.Fatalf("created %q removed %q", f.created, f.removed)
	}
	f.handler = prev
	delete(pg.restored, "app")

	// Another image starts with its own entrypoint and command; the live
	// container's image by name keeps the live command.
	f.get("scalr-app-db").cmd = []string{"postgres", "-c", "port=5432"}
	for image, cmd := range map[string][]string{"other/postgres:16": nil, "postgres:15": {"postgres", "-c", "port=5432"}} {
		dr, err := Drill(context.Background(), f, r, "scalr-app-db", DrillOptions{Image: image, NoRecord: true})
		if err != nil {
			t.Fatal(err)
		}
		if cfg := f.createdConfig[dr.DrillContainer]; cfg.Image != image && image != "postgres:15" || !slices.Equal(cfg.Cmd, cmd) {
			t.Errorf("--image %s: image %s, command %q", image, cfg.Image, cfg.Cmd)
		}
	}
}

// TestDrillNotReady: a drill container that stops, or whose server refuses
// the drill's role or password, ends the wait at once; the error carries
// the end of the container's log (a line quoting a password withheld).
func TestDrillNotReady(t *testing.T) {
	f, _, r, _ := backedUp(t)
	prev := f.handler
	// The live container's command: the drill must run the same one.
	f.get("scalr-app-db").cmd = []string{"postgres", "-c", "port=5433"}

	t.Run("auth", func(t *testing.T) {
		f.handler = func(x *execCall) int {
			if strings.HasPrefix(x.Container, "scalr-drill-") && x.Cmd[0] == "psql" {
				if !slices.Contains(x.Env, "PGPORT=5433") || !slices.Contains(x.Env, "PGPASSWORD=secret-pw") {
					t.Errorf("drill psql environment %q", x.Env)
				}
				c := f.get(x.Container)
				f.mu.Lock()
				c.log = []string{"LOG:  database system is ready to accept connections",
					"STATEMENT:  ALTER ROLE app PASSWORD 'hunter2'",
					`FATAL:  password authentication failed for user "app"`}
				f.mu.Unlock()
				fmt.Fprintln(x.Stderr, `psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5433" failed: FATAL:  password authentication failed for user "app"`)
				return 2
			}
			return prev(x)
		}
		start := time.Now()
		dr, err := Drill(context.Background(), f, r, "scalr-app-db", DrillOptions{NoRecord: true})
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("a permanent error took %s", took)
		}
		if !errors.Is(err, ErrDrillNotReady) || !strings.Contains(err.Error(), "password authentication failed") ||
			!strings.Contains(err.Error(), "last lines of the drill container's log:\n  | LOG:  database system is ready") ||
			!strings.Contains(err.Error(), "withheld") || strings.Contains(err.Error(), "hunter2") || dr.Passed {
			t.Fatalf("drill: %v", err)
		}
		cfg := f.createdConfig[dr.DrillContainer]
		if !slices.Equal(cfg.Cmd, []string{"postgres", "-c", "port=5433"}) {
			t.Errorf("drill command %q", cfg.Cmd)
		}
		if !slices.Equal(f.created, f.removed) {
			t.Errorf("created %q removed %q", f.created, f.removed)
		}
	})

	t.Run("stopped", func(t *testing.T) {
		f.handler = func(x *execCall) int {
			if strings.HasPrefix(x.Container, "scalr-drill-") {
				c := f.get(x.Container)
				f.mu.Lock()
				c.log = []string{"error: database is uninitialized and POSTGRES_PASSWORD is not set"}
				f.mu.Unlock()
				f.setRunning(x.Container, false, 1)
				return 1
			}
			return prev(x)
		}
		start := time.Now()
		_, err := Drill(context.Background(), f, r, "scalr-app-db", DrillOptions{NoRecord: true})
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("a stopped container took %s", took)
		}
		if !errors.Is(err, ErrDrillNotReady) || !strings.Contains(err.Error(), "stopped before Postgres was ready (exit code 1") ||
			!strings.Contains(err.Error(), "  | error: database is uninitialized") {
			t.Fatalf("drill: %v", err)
		}
	})
	f.handler = prev
}
