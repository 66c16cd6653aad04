//go:build linux

package pgstream

// The safe restore on a real engine: a restore that cannot finish leaves the
// live database exactly as it was (per-table checksums before and after),
// a good one keeps the replaced database and can be swapped back, and each
// host restores its own backups.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

// probeExtension is a test extension installed by hand into a container's
// extension directory, so a test can take it away again.
const (
	probeControl = "comment = 'scalr-backup test extension'\ndefault_version = '1.0'\nrelocatable = true\n"
	probeSQL     = "CREATE FUNCTION scalr_probe() RETURNS int LANGUAGE sql AS 'SELECT 42';\n"
)

func installProbe(t *testing.T, c *testenv.Container, major int, control, sql string) {
	t.Helper()
	dir := fmt.Sprintf("/usr/share/postgresql/%d/extension", major)
	c.Exec(t, strings.NewReader(control), "sh", "-c", "cat > "+dir+"/scalr_probe.control")
	c.Exec(t, strings.NewReader(sql), "sh", "-c", "cat > "+dir+"/scalr_probe--1.0.sql")
}

const safeSeed = `
CREATE EXTENSION scalr_probe;
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 2000) i;
CREATE TABLE bulk (id bigint NOT NULL, payload text NOT NULL);
INSERT INTO bulk SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, 150000) i;
CREATE ROLE reader;
GRANT SELECT ON items TO reader;
GRANT CONNECT ON DATABASE app TO reader;
ALTER DATABASE app SET work_mem = '9MB';
COMMENT ON DATABASE app IS 'safe restore''s database';
`

// sideDatabases lists the scalr_restore_* databases of a container.
func sideDatabases(t *testing.T, c *testenv.Container) string {
	t.Helper()
	return c.Psql(t, "postgres", `SELECT coalesce(string_agg(datname, ' ' ORDER BY datname), '') FROM pg_database WHERE datname LIKE 'scalr\_restore\_%';`)
}

func TestSafeRestore(t *testing.T) {
	testenv.Integration(t)
	d := testenv.SharedDocker(t)
	ctx := context.Background()
	c := d.RunPostgres(t, "scalr-safe-db", map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}, nil)
	installProbe(t, c, 15, probeControl, probeSQL)
	c.Psql(t, "", safeSeed)
	dc, err := Connect(ctx, d.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	repoDir := filepath.Join(t.TempDir(), "repo")
	r, err := repo.Init(ctx, local.New(repoDir), itPassword, repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	backup := func(host string) *Result {
		t.Helper()
		// The app database only: the restores below are about it.
		tg, err := InspectTarget(ctx, dc, c.Name, Options{Databases: []string{SelectPostgresDB}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := BackupContainer(ctx, dc, r, tg, BackupOptions{Hostname: host})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	backedUp := checksums(t, c, "app")
	hostA := backup("host-a")
	// The live database moves on after the backup.
	c.Psql(t, "", `INSERT INTO items VALUES (100001, 'after the backup'); DELETE FROM bulk WHERE id % 7 = 0;`)
	live := checksums(t, c, "app")
	untouched := func(t *testing.T, what string) {
		t.Helper()
		sameSums(t, what+": live database", checksums(t, c, "app"), live)
		if side := sideDatabases(t, c); side != "" {
			t.Errorf("%s: side databases left: %s", what, side)
		}
	}

	t.Run("missing-extension", func(t *testing.T) {
		c.Exec(t, nil, "rm", "/usr/share/postgresql/15/extension/scalr_probe.control")
		defer installProbe(t, c, 15, probeControl, probeSQL)
		start := time.Now()
		_, err := Restore(ctx, dc, r, c.Name, "latest", RestoreOptions{Host: "host-a"})
		took := time.Since(start)
		if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "scalr_probe") {
			t.Fatalf("restore without the extension: %v", err)
		}
		if took > 10*time.Second {
			t.Errorf("refusal took %s", took)
		}
		t.Logf("refused in %s: %v", took.Round(time.Millisecond), err)
		untouched(t, "missing extension")
	})

	t.Run("pg_restore-fails-fast", func(t *testing.T) {
		// The extension is there (the preflight passes), but its script
		// fails when pg_restore creates it, with 100 MiB of dump unread.
		installProbe(t, c, 15, probeControl, probeSQL+"SELECT 1/0;\n")
		defer installProbe(t, c, 15, probeControl, probeSQL)
		var mu sync.Mutex
		var restoreAt time.Time
		_, err := Restore(ctx, dc, r, c.Name, "latest", RestoreOptions{Host: "host-a", Progress: func(s RestoreStep) {
			if s.Stage == StageRestore {
				mu.Lock()
				restoreAt = time.Now()
				mu.Unlock()
			}
		}})
		failedAt := time.Now()
		if err == nil || !strings.Contains(err.Error(), "division by zero") || !strings.Contains(err.Error(), "live database is untouched") {
			t.Fatalf("restore with a failing extension script: %v", err)
		}
		mu.Lock()
		took := failedAt.Sub(restoreAt)
		mu.Unlock()
		// pg_restore fails within a moment of starting; the error must not
		// wait for the copy into its input.
		if took > 5*time.Second {
			t.Errorf("the failure was reported %s after pg_restore started", took)
		}
		t.Logf("failed %s after pg_restore started: %v", took.Round(time.Millisecond), err)
		untouched(t, "failing pg_restore")
	})

	t.Run("missing-role-into-another-container", func(t *testing.T) {
		// A fresh container has neither the test extension nor the role
		// the dump grants to: both named, nothing created; with the
		// extension installed and --globals, the backup's roles come first
		// and the restore goes through.
		other := d.RunPostgres(t, "scalr-safe-other-db", map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}, nil)
		otherSums := checksums(t, other, "app")
		_, err := Restore(ctx, dc, r, c.Name, "latest", RestoreOptions{Into: other.Name, Host: "host-a"})
		if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "extension(s) scalr_probe") || !strings.Contains(err.Error(), "role(s) reader") {
			t.Fatalf("restore into a container without the role and extension: %v", err)
		}
		sameSums(t, "other container after the refusal", checksums(t, other, "app"), otherSums)
		if side := sideDatabases(t, other); side != "" {
			t.Errorf("side databases: %s", side)
		}
		installProbe(t, other, 15, probeControl, probeSQL)
		if _, err := Restore(ctx, dc, r, c.Name, "latest", RestoreOptions{Into: other.Name, Host: "host-a"}); !errors.Is(err, ErrPreflight) ||
			strings.Contains(err.Error(), "scalr_probe") || !strings.Contains(err.Error(), "--globals") {
			t.Fatalf("restore without the role: %v", err)
		}
		if _, err := Restore(ctx, dc, r, c.Name, "latest", RestoreOptions{Into: other.Name, Host: "host-a", Globals: true}); err != nil {
			t.Fatalf("restore with --globals: %v", err)
		}
		sameSums(t, "restored into the other container", checksums(t, other, "app"), backedUp)
	})

	t.Run("leftovers", func(t *testing.T) {
		c.Psql(t, "postgres", `CREATE DATABASE "scalr_restore_20200101T000000Z_app"; CREATE DATABASE "scalr_restore_20200101T000001Z_app";`)
		// A session in the second: another restore at work.
		holdCtx, stopHold := context.WithCancel(ctx)
		hold := d.Command(holdCtx, "exec", c.Name, "psql", "-U", "app", "-d", "scalr_restore_20200101T000001Z_app", "-c", "SELECT pg_sleep(600);")
		if err := hold.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stopHold(); hold.Wait() }()
		waitFor(t, func() bool {
			return c.Psql(t, "postgres", `SELECT count(*) FROM pg_stat_activity WHERE datname = 'scalr_restore_20200101T000001Z_app';`) == "1"
		})
		got, err := Leftovers(ctx, dc, c.Name, "app")
		if err != nil || !slices.Equal(got, []string{"scalr_restore_20200101T000000Z_app", "scalr_restore_20200101T000001Z_app"}) {
			t.Fatalf("leftovers: %q %v", got, err)
		}
		plan, err := PlanRestore(ctx, dc, r, c.Name, "latest", RestoreOptions{Host: "host-a"})
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Leftovers) != 2 {
			t.Fatalf("plan leftovers %q", plan.Leftovers)
		}
		res, err := plan.Run(ctx, dc, r, RestoreOptions{Host: "host-a", DropPrevious: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.LeftoversDropped, []string{"scalr_restore_20200101T000000Z_app"}) ||
			!slices.Equal(res.LeftoversInUse, []string{"scalr_restore_20200101T000001Z_app"}) {
			t.Fatalf("dropped %q, in use %q", res.LeftoversDropped, res.LeftoversInUse)
		}
		stopHold()
		hold.Wait()
		c.Psql(t, "postgres", `DROP DATABASE "scalr_restore_20200101T000001Z_app" WITH (FORCE);`)
		// That restore replaced the live database with the backup, and
		// dropped what it replaced: put the test's live state back.
		sameSums(t, "restored with --drop-previous", checksums(t, c, "app"), backedUp)
		if res.Databases[0].Previous == "" || !res.Databases[0].PreviousDropped {
			t.Errorf("previous %+v", res.Databases[0])
		}
		c.Psql(t, "", `INSERT INTO items VALUES (100001, 'after the backup'); DELETE FROM bulk WHERE id % 7 = 0;`)
		sameSums(t, "live state again", checksums(t, c, "app"), live)
	})

	t.Run("good-restore-and-swap-back", func(t *testing.T) {
		// A session on the live database: ended at the swap, not before.
		holdCtx, stopHold := context.WithCancel(ctx)
		hold := d.Command(holdCtx, "exec", c.Name, "psql", "-U", "app", "-d", "app", "-c", "SELECT pg_sleep(600);")
		if err := hold.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stopHold(); hold.Wait() }()
		// A prune (another process's) while the restore reads: refused by
		// the restore's lock, never deleting under it.
		other, err := repo.Open(ctx, local.New(repoDir), itPassword, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		var stages []string
		var pruneErr error
		res, err := Restore(ctx, dc, r, c.Name, "latest", RestoreOptions{Host: "host-a", Progress: func(s RestoreStep) {
			stages = append(stages, s.Stage)
			if s.Stage == StageRestore {
				_, pruneErr = other.Prune(ctx, repo.PruneOptions{})
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		var locked *repo.LockedError
		if !errors.As(pruneErr, &locked) {
			t.Errorf("a prune during the restore: %v, want the repository locked", pruneErr)
		}
		t.Logf("stages %q, %s", stages, res.Duration.Round(time.Millisecond))
		if len(res.Databases) != 1 || len(res.Mismatches()) != 0 || res.Plan.Snapshot.ID != hostA.SnapshotID {
			t.Fatalf("result %+v", res)
		}
		prev := res.Databases[0].Previous
		if !strings.HasPrefix(prev, "app__replaced_") || res.Databases[0].PreviousBytes < 10<<20 || res.Databases[0].PreviousDropped {
			t.Fatalf("previous %+v", res.Databases[0])
		}
		sameSums(t, "restored", checksums(t, c, "app"), backedUp)
		sameSums(t, "kept as "+prev, checksums(t, c, prev), live)
		if side := sideDatabases(t, c); side != "" {
			t.Errorf("side databases left: %s", side)
		}
		// Database-level settings, comment and privileges, the extension,
		// owners: as in the source.
		got := c.Psql(t, "", `SELECT pg_get_userbyid(d.datdba), shobj_description(d.oid, 'pg_database'),
  (SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0),
  has_database_privilege('reader', 'app', 'CONNECT'), has_table_privilege('reader', 'items', 'SELECT'), scalr_probe()
FROM pg_database d WHERE d.datname = 'app';`)
		if got != "app|safe restore's database|work_mem=9MB|t|t|42" {
			t.Errorf("restored database: owner|comment|settings|connect|select|extension = %q", got)
		}
		list, err := ListReplaced(ctx, dc, c.Name)
		if err != nil || len(list) != 1 || list[0].Name != prev || list[0].Of != "app" || list[0].Bytes < 10<<20 {
			t.Fatalf("replaced: %+v %v", list, err)
		}

		// Swap back: the old database is live again, the restored one kept.
		liveName, kept, err := SwapBack(ctx, dc, c.Name, prev, "")
		if err != nil || liveName != "app" || !strings.HasPrefix(kept, "app__replaced_") || kept == prev {
			t.Fatalf("swap back: %q %q %v", liveName, kept, err)
		}
		sameSums(t, "swapped back", checksums(t, c, "app"), live)
		sameSums(t, "restored, kept as "+kept, checksums(t, c, kept), backedUp)
		if _, _, err := SwapBack(ctx, dc, c.Name, "app", ""); !errors.Is(err, ErrNotReplaced) {
			t.Errorf("swap back of the live database: %v", err)
		}
		if err := DropReplaced(ctx, dc, c.Name, kept); err != nil {
			t.Fatal(err)
		}
		if list, _ := ListReplaced(ctx, dc, c.Name); len(list) != 0 {
			t.Errorf("after drop: %+v", list)
		}
	})

	t.Run("host-choice", func(t *testing.T) {
		// host-b backs up the same container name later, with other data.
		c.Psql(t, "", `INSERT INTO items VALUES (200002, 'host b');`)
		hostB := backup("host-b")
		bSums := checksums(t, c, "app")
		c.Psql(t, "", `DELETE FROM items WHERE id = 200002;`)
		plan, err := PlanRestore(ctx, dc, r, c.Name, "latest", RestoreOptions{Host: "host-a"})
		if err != nil || plan.Snapshot.ID != hostA.SnapshotID {
			t.Fatalf("host-a's latest: %v %v", plan, err)
		}
		res, err := Restore(ctx, dc, r, c.Name, "latest", RestoreOptions{Host: "host-b", DropPrevious: true})
		if err != nil || res.Plan.Snapshot.ID != hostB.SnapshotID {
			t.Fatalf("host-b's latest: %v", err)
		}
		sameSums(t, "host-b's backup", checksums(t, c, "app"), bSums)
		if _, err := PlanRestore(ctx, dc, r, c.Name, "latest", RestoreOptions{Host: "host-c"}); !errors.Is(err, repo.ErrNoSnapshot) || !strings.Contains(err.Error(), "host-c") {
			t.Errorf("host without backups: %v", err)
		}
		if _, err := PlanRestore(ctx, dc, r, c.Name, hostB.SnapshotID.Str(), RestoreOptions{Host: "host-a"}); !errors.Is(err, repo.ErrNoSnapshot) ||
			!strings.Contains(err.Error(), "it was made on host host-b: name that host with --host host-b") {
			t.Errorf("another host's snapshot by ID: %v", err)
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSafeRestoreVersionsAndRoom: a Postgres 17 backup restored into a 15
// container is refused before anything is created, a 15 backup restores
// into 17, and a data directory without room for the side copy is refused
// by the preflight with the numbers; every refusal leaves the live database
// as it was.
func TestSafeRestoreVersionsAndRoom(t *testing.T) {
	testenv.Integration(t)
	d := testenv.SharedDocker(t)
	ctx := context.Background()
	env := map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}
	c15 := d.RunPostgresWith(t, "scalr-v15-db", testenv.PostgresOptions{Major: 15, Env: env})
	c17 := d.RunPostgresWith(t, "scalr-v17-db", testenv.PostgresOptions{Major: 17, Env: env})
	// PGDATA on a 160 MiB tmpfs: the cluster takes about 40 MiB, the
	// database below about 60 MiB, so a second copy cannot fit.
	small := d.RunPostgresWith(t, "scalr-small-db", testenv.PostgresOptions{Env: env,
		Tmpfs: map[string]string{"/var/lib/postgresql/data": "size=160m"}})
	seed := `CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 500) i;`
	for _, c := range []*testenv.Container{c15, c17} {
		c.Psql(t, "", seed+"INSERT INTO items VALUES (1000, 'major "+fmt.Sprint(c.Major)+"');")
	}
	small.Psql(t, "", seed+`CREATE TABLE bulk (id bigint, payload text);
INSERT INTO bulk SELECT i, repeat(md5(i::text), 6) FROM generate_series(1, 200000) i;`)
	dc, err := Connect(ctx, d.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	r, err := repo.Init(ctx, local.New(filepath.Join(t.TempDir(), "repo")), itPassword, repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, c := range []*testenv.Container{c15, c17, small} {
		tg, err := InspectTarget(ctx, dc, c.Name, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := BackupContainer(ctx, dc, r, tg, BackupOptions{Hostname: "h"}); err != nil {
			t.Fatal(err)
		}
	}
	sums15, sums17, sumsSmall := checksums(t, c15, "app"), checksums(t, c17, "app"), checksums(t, small, "app")

	t.Run("17-into-15-refused", func(t *testing.T) {
		_, err := Restore(ctx, dc, r, c17.Name, "latest", RestoreOptions{Into: c15.Name, Host: "h"})
		if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "newer major version") {
			t.Fatalf("17 into 15: %v", err)
		}
		// The 15 pg_restore cannot read 17's archive either: said too.
		if !strings.Contains(err.Error(), "cannot read the dump") {
			t.Errorf("17 into 15: the archive check is missing: %v", err)
		}
		t.Logf("refused: %v", err)
		sameSums(t, "15 after the refusal", checksums(t, c15, "app"), sums15)
		if side := sideDatabases(t, c15); side != "" {
			t.Errorf("side databases: %s", side)
		}
	})
	t.Run("15-into-17", func(t *testing.T) {
		res, err := Restore(ctx, dc, r, c15.Name, "latest", RestoreOptions{Into: c17.Name, Host: "h"})
		if err != nil {
			t.Fatal(err)
		}
		sameSums(t, "15's backup in 17", checksums(t, c17, "app"), sums15)
		sameSums(t, "17's own, kept", checksums(t, c17, res.Databases[0].Previous), sums17)
	})
	t.Run("no-room", func(t *testing.T) {
		_, err := Restore(ctx, dc, r, small.Name, "latest", RestoreOptions{Host: "h"})
		if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "not enough room") || !strings.Contains(err.Error(), "MiB free") {
			t.Fatalf("no room: %v", err)
		}
		t.Logf("refused: %v", err)
		sameSums(t, "small after the refusal", checksums(t, small, "app"), sumsSmall)
		if side := sideDatabases(t, small); side != "" {
			t.Errorf("side databases: %s", side)
		}
	})
}
