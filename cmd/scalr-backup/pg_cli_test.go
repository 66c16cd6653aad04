//go:build linux

package main

// The Postgres commands (discover, pg-backup, restore, drill) run in-process
// against a private dockerd with the project's Postgres image.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/pgstream"
	"github.com/scalr-platform/scalr-backup/repo"
)

// pgSums is every table's row count and rows' checksum in db.
func pgSums(t *testing.T, c *testenv.Container, db string) string {
	t.Helper()
	tables := c.Psql(t, db, `SELECT string_agg(format('%I.%I', schemaname, tablename), E'\n' ORDER BY schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema');`)
	var q strings.Builder
	for _, tbl := range strings.Split(tables, "\n") {
		if tbl != "" {
			fmt.Fprintf(&q, "SELECT %s || ' ' || count(*) || ' ' || coalesce(md5(string_agg(md5(t::text), ',' ORDER BY md5(t::text))), '-') FROM %s t;\n",
				"'"+strings.ReplaceAll(tbl, "'", "''")+"'", tbl)
		}
	}
	return c.Psql(t, db, q.String())
}

func TestPgCommands(t *testing.T) {
	testenv.Integration(t)
	start := time.Now()
	d := testenv.StartDocker(t)
	c := d.RunPostgres(t, "scalr-cli-db", map[string]string{"POSTGRES_USER": "cli", "POSTGRES_DB": "cli"}, nil)
	c.Psql(t, "", `
		CREATE TABLE items (id int PRIMARY KEY, name text);
		INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) i;
		CREATE TABLE "Ärger" (id int, note text);
		INSERT INTO "Ärger" SELECT i, 'ö ' || i FROM generate_series(1, 5) i;
		SELECT lo_from_bytea(0, 'a large object');`)
	t.Logf("dockerd and container ready in %s", time.Since(start).Round(time.Millisecond))
	env := newRepoEnv(t, 2)
	env["DOCKER_HOST"] = d.Host()
	original := pgSums(t, c, "cli")
	secret := c.Password
	noSecret := func(t *testing.T, res result) {
		t.Helper()
		if strings.Contains(res.stdout+res.stderr, secret) {
			t.Errorf("output holds the database password:\n%s\n%s", res.stdout, res.stderr)
		}
	}

	t.Run("discover", func(t *testing.T) {
		res := runCLI(t, env, nil, "discover")
		noSecret(t, res)
		if res.code != 0 || !strings.Contains(res.stdout, "scalr-cli-db") || !strings.Contains(res.stdout, "CONTAINER") || !strings.Contains(res.stdout, " cli ") {
			t.Fatalf("discover: %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		res = runCLI(t, env, nil, "discover", "--json")
		var targets []pgstream.Target
		if err := json.Unmarshal([]byte(res.stdout), &targets); err != nil || len(targets) != 1 ||
			targets[0].Container != "scalr-cli-db" || targets[0].User != "cli" || targets[0].PostgresMajor != 15 {
			t.Fatalf("discover --json: %v %s", err, res.stdout)
		}
		res = runCLI(t, env, nil, "discover", "--pattern", "nothing-*")
		if res.code != 0 || res.stdout != "" || !strings.Contains(res.stderr, "warning: no running Postgres container matches") {
			t.Fatalf("no match: %d %q %q", res.code, res.stdout, res.stderr)
		}
		res = runCLI(t, env, nil, "discover", "--json", "--pattern", "nothing-*")
		if res.code != 0 || strings.TrimSpace(res.stdout) != "[]" {
			t.Fatalf("no match, JSON: %d %q", res.code, res.stdout)
		}
	})

	t.Run("pg-backup", func(t *testing.T) {
		res := runCLI(t, env, nil, "pg-backup", "--host", "cli-host")
		noSecret(t, res)
		if res.code != 0 || !strings.Contains(res.stdout, "scalr-cli-db") || !strings.Contains(res.stdout, " ok ") {
			t.Fatalf("pg-backup: %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		t.Logf("pg-backup:\n%s", res.stdout)
		res = runCLI(t, env, nil, "snapshots", "--json", "--tag", "scalr-cli-db")
		if res.code != 0 || strings.Count(res.stdout, `"short_id"`) != 1 || !strings.Contains(res.stdout, `"/scalr-cli-db"`) {
			t.Fatalf("snapshots: %s %s", res.stdout, res.stderr)
		}
		// One container failing does not stop the others; the exit code says.
		res = runCLI(t, env, nil, "pg-backup", "--json", "scalr-nope-db", "scalr-cli-db")
		var lines []pgBackupResult
		if err := json.Unmarshal([]byte(res.stdout), &lines); err != nil || len(lines) != 2 {
			t.Fatalf("pg-backup --json: %v %q", err, res.stdout)
		}
		if res.code == 0 || lines[0].OK || !strings.Contains(lines[0].Error, "no such container") || !lines[1].OK || !strings.Contains(res.stderr, "1 of 2 container backups failed") {
			t.Fatalf("pg-backup with a missing container: %d %+v %s", res.code, lines, res.stderr)
		}
		res = runCLI(t, env, nil, "pg-backup", "--pattern", "nothing-*")
		if res.code != 0 || !strings.Contains(res.stderr, "nothing to back up") {
			t.Fatalf("pg-backup without containers: %d %s", res.code, res.stderr)
		}
	})

	t.Run("restore", func(t *testing.T) {
		c.Psql(t, "", `DELETE FROM items WHERE id % 2 = 0; DROP TABLE "Ärger";`)
		damaged := pgSums(t, c, "cli")
		if damaged == original {
			t.Fatal("damage did not change anything")
		}
		// No terminal, no --yes: refuse, change nothing.
		res := runCLI(t, env, strings.NewReader("yes\n"), "restore", "scalr-cli-db", "latest")
		if res.code == 0 || !strings.Contains(res.stderr, "refusing to restore without --yes") || !strings.Contains(res.stderr, "database cli") {
			t.Fatalf("restore without --yes: %d\n%s", res.code, res.stderr)
		}
		if now := pgSums(t, c, "cli"); now != damaged {
			t.Fatalf("a refused restore changed the database:\n%s\nwas:\n%s", now, damaged)
		}
		res = runCLI(t, env, nil, "restore", "--yes", "scalr-cli-db", "latest")
		noSecret(t, res)
		if res.code != 0 || !strings.Contains(res.stdout, "row counts match the manifest") {
			t.Fatalf("restore --yes: %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		t.Logf("restore --yes:\n%s%s", res.stderr, res.stdout)
		if now := pgSums(t, c, "cli"); now != original {
			t.Fatalf("restored:\n%s\nwant:\n%s", now, original)
		}
		if lo := c.Psql(t, "", "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata;"); lo != "a large object" {
			t.Errorf("large object after the restore: %q", lo)
		}
		res = runCLI(t, env, nil, "restore", "--yes", "scalr-nope-db", "latest")
		if res.code == 0 || !strings.Contains(res.stderr, "no such container: scalr-nope-db") {
			t.Fatalf("restore of a missing container: %d %s", res.code, res.stderr)
		}
		res = runCLI(t, env, nil, "restore", "--yes", "--db", "other", "scalr-cli-db", "latest")
		if res.code == 0 || !strings.Contains(res.stderr, `no database "other"`) {
			t.Fatalf("restore of a missing database: %d %s", res.code, res.stderr)
		}
	})

	t.Run("drill", func(t *testing.T) {
		res := runCLI(t, env, nil, "drill")
		noSecret(t, res)
		if res.code != 0 || !strings.Contains(res.stdout, "drill of scalr-cli-db: PASSED") || !strings.Contains(res.stdout, "pass") {
			t.Fatalf("drill: %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		t.Logf("drill:\n%s", res.stdout)

		// A manifest that disagrees with the dump, saved through the library.
		ctx := context.Background()
		r, err := repo.Open(ctx, local.New(env["RESTIC_REPOSITORY"]), env["RESTIC_PASSWORD"], repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		sn, m, err := pgstream.FindBackup(ctx, r, "scalr-cli-db", "latest", "")
		if err != nil {
			t.Fatal(err)
		}
		for i, tb := range m.Databases[0].Tables {
			if tb.Name == "items" {
				m.Databases[0].Tables[i].Rows = 99
			}
		}
		buf, _ := m.Marshal()
		// Every file of the backup (each database's dump, the globals),
		// with the tampered manifest.
		var streams []repo.Stream
		files := []string{m.Globals.File}
		for _, db := range m.Databases {
			files = append(files, db.File)
		}
		for _, f := range files {
			node, err := r.FindNode(ctx, sn, filepath.Join("/scalr-cli-db", f))
			if err != nil {
				t.Fatal(err)
			}
			fr, err := r.OpenFile(ctx, node)
			if err != nil {
				t.Fatal(err)
			}
			defer fr.Close()
			streams = append(streams, repo.Stream{Name: f, Reader: fr})
		}
		streams = append(streams, repo.Stream{Name: pgstream.ManifestFile, Reader: bytes.NewReader(buf)})
		// On the backup's host: drill restores only its own host's backups.
		if _, err := r.BackupStreams(ctx, "scalr-cli-db", streams, repo.BackupOptions{Tags: []string{"scalr-cli-db"}, Hostname: sn.Hostname}); err != nil {
			t.Fatal(err)
		}
		res = runCLI(t, env, nil, "drill", "scalr-cli-db")
		if res.code == 0 || !strings.Contains(res.stderr, "public.items: 99 rows in the manifest, 100 restored") || !strings.Contains(res.stdout, "FAIL") {
			t.Fatalf("drill of a tampered manifest: %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		if left := d.CLI(t, "ps", "--all", "--quiet", "--filter", "name=scalr-drill-"); left != "" {
			t.Errorf("drill containers left behind: %s", left)
		}
		res = runCLI(t, env, nil, "snapshots", "--json", "--tag", "drill,drill-of:scalr-cli-db")
		if strings.Count(res.stdout, `"short_id"`) != 2 || strings.Count(res.stdout, "drill-failed") != 1 || !strings.Contains(res.stdout, "/drill/scalr-cli-db.json") {
			t.Errorf("drill records: %s", res.stdout)
		}
	})
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}

// TestPgDockerUnreachable: a missing Docker socket is named.
func TestPgDockerUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	env := map[string]string{"DOCKER_HOST": "unix://" + sock}
	for _, args := range [][]string{{"discover"}, {"pg-backup"}, {"drill"}, {"restore", "--yes", "scalr-app-db", "latest"}} {
		res := runCLI(t, env, nil, args...)
		if res.code == 0 || !strings.Contains(res.stderr, "the Docker socket "+sock+" does not exist") {
			t.Errorf("%s: %d %s", args[0], res.code, res.stderr)
		}
	}
}
