//go:build linux

package pgstream

// Integration tests on a private dockerd (testenv.SharedDocker) with the
// project's Postgres 15 image and restic 0.18.1: the pgstream issue's
// acceptance points 1-6, library side. One set of containers is shared by
// the subtests, which run in order and build on each other.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunWithServices(m)) }

const itPassword = "integration test password"

// bigRows rows of 256 characters make the "big" table's dump a little over
// 100 MiB (the repository stores it compressed, about a sixth of that).
const bigRows = 420000

// appSeed fills scalr-app-db: several tables, one over 100 MiB, a table
// with a non-ASCII name, a large object, a view, a writer's table.
const appSeed = `
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00');
INSERT INTO users (name) SELECT 'user ' || i FROM generate_series(1, 1000) i;
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int NOT NULL REFERENCES users, amount numeric(10,2));
INSERT INTO orders (user_id, amount) SELECT 1 + i % 1000, i * 1.25 FROM generate_series(1, 5000) i;
CREATE TABLE "Überprüfung ✓" (id int PRIMARY KEY, note text);
INSERT INTO "Überprüfung ✓" SELECT i, 'grüße ' || i FROM generate_series(1, 50) i;
CREATE TABLE big (id bigint NOT NULL, payload text NOT NULL);
INSERT INTO big SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, ` + "420000" /* bigRows */ + `) i;
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), v text);
CREATE TABLE stop_flag (x int);
CREATE VIEW rich_users AS SELECT u.name, sum(o.amount) AS total FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.name;
SELECT lo_from_bytea(0, convert_to(repeat('large object ✓ ', 20000), 'UTF8'));
CREATE ROLE reporting;
GRANT SELECT ON users TO reporting;
GRANT CONNECT ON DATABASE app TO reporting;
ALTER DATABASE app SET work_mem = '8MB';
COMMENT ON DATABASE app IS 'the app''s database';
`

const shopSeed = `
CREATE TABLE products (sku text PRIMARY KEY, title text, price numeric);
INSERT INTO products SELECT 'sku-' || i, 'product ' || i, i FROM generate_series(1, 300) i;
CREATE TABLE carts (id int PRIMARY KEY, items jsonb);
INSERT INTO carts SELECT i, jsonb_build_object('sku', 'sku-' || i, 'n', i % 7) FROM generate_series(1, 120) i;
CREATE DATABASE shop_archive;
-- The snapshot-holding session waits idle in its transaction while pg_dump
-- runs: such settings must not end it.
ALTER DATABASE shop SET idle_in_transaction_session_timeout = '50ms';
`

const authSeed = `
CREATE TABLE sessions (id int PRIMARY KEY, token text);
INSERT INTO sessions SELECT i, md5('t' || i) FROM generate_series(1, 10) i;
CREATE TABLE audit (at timestamptz, what text);
INSERT INTO audit SELECT '2026-01-01'::timestamptz + i * interval '1 hour', 'login ' || i FROM generate_series(1, 40) i;
`

type pgFixture struct {
	d      *testenv.Docker
	dc     *client.Client
	r      *repo.Repository
	repoD  string
	app    *testenv.Container
	shop   *testenv.Container
	auth   *testenv.Container
	verify *testenv.Container
	// Checksums of the databases as backed up, by container and database.
	sums map[string]map[string]string
	// The backups.
	results map[string]*Result
}

func TestPostgresIntegration(t *testing.T) {
	testenv.Integration(t)
	restic := testenv.Restic(t, testenv.Restic0181)
	start := time.Now()
	d := testenv.SharedDocker(t)
	image := d.PostgresImage(t)
	t.Logf("dockerd (%s) and image ready in %s", d.StorageDriver(), time.Since(start).Round(time.Millisecond))

	fx := &pgFixture{d: d, sums: map[string]map[string]string{}, results: map[string]*Result{}}
	step := time.Now()
	fx.app = d.RunPostgres(t, "scalr-app-db", map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}, nil)
	fx.shop = d.RunPostgres(t, "scalr-shop-db", map[string]string{"POSTGRES_USER": "shop"}, map[string]string{LabelAllDatabases: "true"})
	fx.auth = d.RunPostgres(t, "scalr-auth-postgres", nil, nil) // postgres / postgres
	// Matches scalr-*-db but opted out: the fresh container for restores by hand.
	fx.verify = d.RunPostgres(t, "scalr-verify-db", nil, map[string]string{LabelBackup: "false"})
	// The decoy: a long-running container of the same image, another name.
	d.CLI(t, "run", "--detach", "--network", "none", "--name", "scalr-app-web", "--entrypoint", "sleep", image, "infinity")
	t.Cleanup(func() { d.CLI(t, "rm", "--force", "scalr-app-web") })
	t.Logf("containers started in %s", time.Since(step).Round(time.Millisecond))

	step = time.Now()
	fx.app.Psql(t, "", appSeed)
	fx.shop.Psql(t, "", shopSeed)
	fx.shop.Psql(t, "shop_archive", "CREATE TABLE old_orders (id int, total numeric); INSERT INTO old_orders SELECT i, i * 2 FROM generate_series(1, 77) i;")
	fx.auth.Psql(t, "", authSeed)
	t.Logf("data seeded in %s", time.Since(step).Round(time.Millisecond))

	ctx := context.Background()
	var err error
	fx.dc, err = Connect(ctx, d.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	defer fx.dc.Close()
	fx.repoD = filepath.Join(t.TempDir(), "repo")
	fx.r, err = repo.Init(ctx, local.New(fx.repoD), itPassword, repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fx.r.Close()

	run := func(name string, fn func(t *testing.T)) {
		step := time.Now()
		ok := t.Run(name, fn)
		t.Logf("%s: %s in %s", name, map[bool]string{true: "ok", false: "FAILED"}[ok], time.Since(step).Round(time.Millisecond))
	}
	run("discover", fx.testDiscover)
	run("backup", fx.testBackup)
	run("restic-dump-pg_restore", func(t *testing.T) { fx.testResticDump(t, restic) })
	run("dump-without-stdbuf", fx.testDumpWithoutStdbuf)
	run("failing-dumps", fx.testFailingDumps)
	run("restore-after-damage", fx.testRestore)
	run("drill", fx.testDrill)
	run("killed-container", fx.testKilledContainer)
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}

func (fx *pgFixture) testDiscover(t *testing.T) {
	targets, err := Discover(context.Background(), fx.dc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tg := range targets {
		names = append(names, tg.Container)
	}
	if strings.Join(names, " ") != "scalr-app-db scalr-auth-postgres scalr-shop-db" {
		t.Fatalf("discovered %q", names)
	}
	// Every database of each container by default (templates excepted),
	// the label's "all" too; the connection as found in the container.
	want := map[string]string{
		"scalr-app-db":        "app app [app postgres]",
		"scalr-auth-postgres": "postgres postgres [postgres]",
		"scalr-shop-db":       "shop shop [postgres shop shop_archive]",
	}
	for _, tg := range targets {
		if got := fmt.Sprintf("%s %s %v", tg.User, tg.Database, tg.Databases); got != want[tg.Container] {
			t.Errorf("%s: %s, want %s", tg.Container, got, want[tg.Container])
		}
		if tg.PostgresMajor != 15 || tg.Image != testenv.PostgresImageName || !strings.HasPrefix(tg.ImageID, "sha256:") ||
			tg.Port != 5432 || tg.SocketDir != "/var/run/postgresql" || tg.PasswordFrom != "POSTGRES_PASSWORD" || len(tg.LeftOut) != 0 || !tg.AllDatabases {
			t.Errorf("%s: %+v", tg.Container, tg)
		}
	}
	// Restricted to POSTGRES_DB, the others are named as left out.
	targets, err = Discover(context.Background(), fx.dc, Options{Databases: []string{SelectPostgresDB}})
	if err != nil || len(targets) != 3 {
		t.Fatalf("discover POSTGRES_DB: %v %+v", err, targets)
	}
	if a := targets[0]; a.Container != "scalr-app-db" || fmt.Sprint(a.Databases) != "[app]" ||
		len(a.LeftOut) != 1 || a.LeftOut[0] != (LeftOutDatabase{"postgres", "not in the selection POSTGRES_DB"}) {
		t.Errorf("scalr-app-db restricted: %+v", a)
	}
	if s := targets[2]; s.Container != "scalr-shop-db" || fmt.Sprint(s.Databases) != "[postgres shop shop_archive]" {
		t.Errorf("scalr-shop-db: its label wins: %+v", s)
	}
	// A tool that is not in the container, as the engine reports it.
	_, err = runCapture(context.Background(), fx.dc, "scalr-app-web", []string{"pg_dump_nonexistent", "--version"})
	if !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "pg_dump_nonexistent could not be run in container scalr-app-web") {
		t.Errorf("missing tool: %v", err)
	}
}

// checksums returns, for every table of db (but skip), its row count and
// the MD5 of its rows' MD5s in order, plus the large objects' MD5s.
func checksums(t *testing.T, c *testenv.Container, db string, skip ...string) map[string]string {
	t.Helper()
	tables := c.Psql(t, db, `SELECT string_agg(format('%I.%I', schemaname, tablename), E'\n' ORDER BY 1) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema');`)
	out := map[string]string{}
	var q strings.Builder
	var names []string
	for _, tbl := range strings.Split(tables, "\n") {
		if tbl == "" || contains(skip, tbl) {
			continue
		}
		names = append(names, tbl)
		fmt.Fprintf(&q, "SELECT count(*) || ':' || coalesce(md5(string_agg(md5(t::text), ',' ORDER BY md5(t::text))), '-') FROM %s t;\n", tbl)
	}
	q.WriteString("SELECT coalesce(string_agg(oid || '=' || md5(lo_get(oid)), ',' ORDER BY oid), 'none') FROM pg_largeobject_metadata;\n")
	lines := strings.Split(c.Psql(t, db, q.String()), "\n")
	if len(lines) != len(names)+1 {
		t.Fatalf("checksums of %s/%s: %d lines for %d tables: %q", c.Name, db, len(lines), len(names), lines)
	}
	for i, n := range names {
		out[n] = lines[i]
	}
	out["large objects"] = lines[len(names)]
	return out
}

func sameSums(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: table %s: %q, want %q", what, k, got[k], w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: table %s not expected", what, k)
		}
	}
}

// procWriteBytes is this process's write_bytes from /proc/self/io: bytes it
// caused to be written to storage.
func procWriteBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	// Packs are spooled (encrypted) to unnamed temporary files that are
	// closed within a second or so: the kernel counts their pages in
	// write_bytes when dirtied and in cancelled_write_bytes when dropped
	// unwritten, so the difference is what reached storage.
	var written, cancelled int64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok || (k != "write_bytes" && k != "cancelled_write_bytes") {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if k == "write_bytes" {
			written, found = n, true
		} else {
			cancelled = n
		}
	}
	if !found {
		t.Fatalf("/proc/self/io has no write_bytes: %s", b)
	}
	return written - cancelled
}

// writer inserts into events, one committed row at a time, until stopped.
type writer struct {
	stop func() int64 // stops it and returns the row count
}

func startWriter(t *testing.T, d *testenv.Docker, c *testenv.Container) *writer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := d.Command(ctx, "exec", c.Name, "psql", "-X", "-q", "-U", c.User, "-d", c.DB, "-v", "ON_ERROR_STOP=1", "-c", `
DO $$
DECLARE n int := 0;
BEGIN
  WHILE NOT EXISTS (SELECT 1 FROM stop_flag) LOOP
    INSERT INTO events (v) VALUES ('write ' || n);
    n := n + 1;
    COMMIT;
    PERFORM pg_sleep(0.001);
  END LOOP;
END $$;`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	var once sync.Once
	var n int64
	w := &writer{stop: func() int64 {
		once.Do(func() {
			c.Psql(t, "", "INSERT INTO stop_flag VALUES (1);")
			err := cmd.Wait()
			cancel()
			if err != nil {
				t.Errorf("writer: %v: %s", err, stderr.String())
			}
			n, _ = strconv.ParseInt(c.Psql(t, "", "SELECT count(*) FROM events;"), 10, 64)
		})
		return n
	}}
	t.Cleanup(func() { w.stop() })
	// Wait until it writes.
	for i := 0; ; i++ {
		if c.Psql(t, "", "SELECT count(*) > 10 FROM events;") == "t" {
			return w
		}
		if i > 200 {
			t.Fatalf("the writer does not write: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (fx *pgFixture) testBackup(t *testing.T) {
	ctx := context.Background()
	fx.sums["scalr-app-db/app"] = checksums(t, fx.app, "app", "public.events")
	fx.sums["scalr-app-db/postgres"] = checksums(t, fx.app, "postgres")
	fx.sums["scalr-shop-db/shop"] = checksums(t, fx.shop, "shop")
	fx.sums["scalr-shop-db/shop_archive"] = checksums(t, fx.shop, "shop_archive")
	fx.sums["scalr-shop-db/postgres"] = checksums(t, fx.shop, "postgres")
	fx.sums["scalr-auth-postgres/postgres"] = checksums(t, fx.auth, "postgres")

	targets, err := Discover(ctx, fx.dc, Options{})
	if err != nil || len(targets) != 3 {
		t.Fatalf("discover: %v %+v", err, targets)
	}
	// scalr-app-db: the big one, with a writer busy throughout, TMPDIR on
	// a fresh folder that must stay empty, and this process's disk writes
	// measured.
	w := startWriter(t, fx.d, fx.app)
	before, _ := strconv.ParseInt(fx.app.Psql(t, "", "SELECT count(*) FROM events;"), 10, 64)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	wb0 := procWriteBytes(t)
	for _, tg := range targets {
		step := time.Now()
		res, err := BackupContainer(ctx, fx.dc, fx.r, tg, BackupOptions{Hostname: "it-host", ProgramVersion: "pgstream-test"})
		if err != nil {
			t.Fatalf("backup of %s: %v", tg.Container, err)
		}
		fx.results[tg.Container] = res
		var size int64
		for _, db := range res.Manifest.Databases {
			size += db.Size
		}
		t.Logf("%s: snapshot %s, %d bytes of dumps in %s, %d bytes added", tg.Container, res.SnapshotID.Str(), size,
			time.Since(step).Round(time.Millisecond), res.Stats.DataAdded)
		if tg.Container == "scalr-app-db" {
			written := procWriteBytes(t) - wb0
			t.Logf("scalr-app-db: this process wrote %d bytes to storage for a %d-byte dump", written, size)
			if size < 100<<20 {
				t.Errorf("the app dump is %d bytes, want over 100 MiB", size)
			}
			if written > size/3 {
				t.Errorf("this process wrote %d bytes during a %d-byte dump: a cleartext copy on disk?", written, size)
			}
			after := w.stop()
			ev := tableRows(res.Manifest, "app", "public", "events")
			t.Logf("events: %d rows before the backup, %d in the manifest, %d after", before, ev, after)
			if !(before < ev && ev < after) {
				t.Errorf("the writer did not write during the dump: %d before, %d in the manifest, %d after", before, ev, after)
			}
		}
	}
	if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 0 {
		t.Errorf("TMPDIR %s holds %d entries after the backups (%v)", tmp, len(ents), err)
	}
	// The image has GNU coreutils: the probe finds stdbuf working, so the
	// dumps above ran with its 1 MiB output buffer (the command is
	// TestBackupDumpsUnderStdbuf's to check).
	for _, c := range []string{"scalr-app-db", "scalr-shop-db"} {
		if conn, err := FindConn(ctx, fx.dc, c); err != nil || !conn.stdbuf {
			t.Errorf("%s: stdbuf not found working (%v)", c, err)
		}
	}
	// The repository holds no cleartext.
	_ = filepath.WalkDir(fx.repoD, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			for _, s := range []string{"large object ✓", "grüße 17", md5hex("77")} {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("repository file %s holds cleartext %q", p, s)
				}
			}
		}
		return nil
	})

	// The manifests' counts are the databases' (outside the writer's table).
	app := fx.results["scalr-app-db"].Manifest
	for _, c := range []struct {
		db, schema, table string
		rows              int64
	}{{"app", "public", "big", bigRows}, {"app", "public", "users", 1000}, {"app", "public", "Überprüfung ✓", 50}, {"app", "public", "orders", 5000}} {
		if got := tableRows(app, c.db, c.schema, c.table); got != c.rows {
			t.Errorf("manifest: %s.%s has %d rows, want %d", c.schema, c.table, got, c.rows)
		}
	}
	if got := tableRows(fx.results["scalr-shop-db"].Manifest, "shop_archive", "public", "old_orders"); got != 77 {
		t.Errorf("shop_archive.old_orders: %d", got)
	}
	for name, res := range fx.results {
		sn := res.Snapshot
		if len(sn.Tags) != 1 || sn.Tags[0] != name || len(sn.Paths) != 1 || sn.Paths[0] != "/"+name || sn.Hostname != "it-host" {
			t.Errorf("%s: snapshot %+v", name, sn)
		}
	}
}

// A container where stdbuf cannot work (its preload library moved away, as
// in an image without GNU coreutils) is dumped by pg_dump alone, whole.
func (fx *pgFixture) testDumpWithoutStdbuf(t *testing.T) {
	ctx := context.Background()
	const lib = "/usr/libexec/coreutils/libstdbuf.so"
	name := fx.auth.Name
	fx.d.CLI(t, "exec", "--user", "root", name, "mv", lib, lib+".away")
	defer fx.d.CLI(t, "exec", "--user", "root", name, "mv", lib+".away", lib)
	if conn, err := FindConn(ctx, fx.dc, name); err != nil || conn.stdbuf {
		t.Fatalf("%s without libstdbuf.so: stdbuf taken for working (%v)", name, err)
	}
	tg, err := InspectTarget(ctx, fx.dc, name, Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := BackupContainer(ctx, fx.dc, fx.r, tg, BackupOptions{Hostname: "it-host", ProgramVersion: "pgstream-test"})
	if err != nil {
		t.Fatalf("backup without stdbuf: %v", err)
	}
	for table, rows := range map[string]int64{"audit": 40, "sessions": 10} {
		if got := tableRows(res.Manifest, "postgres", "public", table); got != rows {
			t.Errorf("%s: %d rows in the manifest, want %d", table, got, rows)
		}
	}
	// The drill and the later steps take this one as the container's
	// latest backup.
	fx.results[name] = res
}

// md5hex is md5(s) as Postgres prints it: the big table's row s repeats it.
func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func tableRows(m *Manifest, db, schema, table string) int64 {
	d := m.Database(db)
	if d == nil {
		return -2
	}
	for _, t := range d.Tables {
		if t.Schema == schema && t.Name == table {
			return t.Rows
		}
	}
	return -1
}

// testResticDump: each dump, fetched by the real restic and fed to
// pg_restore by hand in a fresh container, recreates identical data.
func (fx *pgFixture) testResticDump(t *testing.T, restic *testenv.ResticCLI) {
	ctx := context.Background()
	globalsDone := map[string]bool{}
	for _, name := range []string{"scalr-app-db", "scalr-shop-db", "scalr-auth-postgres"} {
		res := fx.results[name]
		if res == nil {
			t.Fatalf("no backup of %s", name)
		}
		for _, db := range res.Manifest.Databases {
			step := time.Now()
			target := strings.ReplaceAll("v_"+name+"_"+db.Name, "-", "_")
			fx.verify.Psql(t, "postgres", "CREATE DATABASE "+target+";")
			if !globalsDone[name] {
				// By hand, as in a fresh server: the roles first (errors
				// for roles that exist are fine), then the dump.
				globalsDone[name] = true
				gout, gwait := restic.Stream(ctx, fx.repoD, itPassword, "dump", res.SnapshotID.String(), "/"+name+"/"+GlobalsFile)
				gcmd := fx.d.Command(ctx, "exec", "-i", fx.verify.Name, "psql", "-X", "-q", "-U", "postgres", "-d", "postgres")
				gcmd.Stdin = gout
				if b, err := gcmd.CombinedOutput(); err != nil {
					t.Fatalf("restic dump globals.sql | psql: %v: %s", err, b)
				}
				gout.Close()
				if err := gwait(); err != nil {
					t.Fatal(err)
				}
			}
			out, wait := restic.Stream(ctx, fx.repoD, itPassword, "dump", res.SnapshotID.String(), "/"+name+"/"+db.File)
			h := sha256.New()
			cmd := fx.d.Command(ctx, "exec", "-i", fx.verify.Name, "pg_restore", "--exit-on-error", "--no-owner", "-U", "postgres", "-d", target)
			cmd.Stdin = io.TeeReader(out, h)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			rerr := cmd.Run()
			out.Close()
			if werr := wait(); werr != nil {
				t.Fatalf("restic dump: %v", werr)
			}
			if rerr != nil {
				t.Fatalf("restic dump %s | pg_restore: %v: %s", db.File, rerr, stderr.String())
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != db.SHA256 {
				t.Errorf("%s/%s: restic dump gave SHA-256 %s, the manifest says %s", name, db.File, got, db.SHA256)
			}
			skip := []string{}
			if name == "scalr-app-db" && db.Name == "app" {
				skip = append(skip, "public.events")
				n := fx.verify.Psql(t, target, "SELECT count(*) FROM events;")
				if want := strconv.FormatInt(tableRows(res.Manifest, "app", "public", "events"), 10); n != want {
					t.Errorf("events restored by hand: %s rows, manifest %s", n, want)
				}
			}
			sameSums(t, name+"/"+db.Name+" restored by hand", checksums(t, fx.verify, target, skip...), fx.sums[name+"/"+db.Name])
			t.Logf("restic dump | pg_restore of %s/%s (%d bytes): %s", name, db.Name, db.Size, time.Since(step).Round(time.Millisecond))
		}
	}
}

// testFailingDumps: a database dropped in the middle of its dump leaves no
// snapshot and an error naming the container.
func (fx *pgFixture) testFailingDumps(t *testing.T) {
	ctx := context.Background()
	fx.shop.Psql(t, "postgres", "CREATE DATABASE doomed;")
	// About 100 MB that does not repeat within a row. While the backup is
	// held, the chunker's pool (workers + 1 buffers of up to 8 MiB), the
	// exec stream, the engine and the pipe hold a few chunks' worth:
	// chunks of these rows average 1.8 MB. CI once saw the 26 MB of
	// repeat(md5(i::text), 8) used before (chunks average 2.9 MB, up to
	// 6 MB) pass whole into those buffers: pg_dump had ended before the
	// drop.
	fx.shop.Psql(t, "doomed", "CREATE TABLE filler AS SELECT i, encode(sha512(i::text::bytea), 'hex') || encode(sha512((-i)::text::bytea), 'hex') AS p FROM generate_series(1, 400000) i;")
	tg, err := InspectTarget(ctx, fx.dc, "scalr-shop-db", Options{})
	if err != nil {
		t.Fatal(err)
	}
	tg.Databases = []string{"shop", "doomed"}
	n0 := countSnapshots(t, fx.r)
	err = backupInterrupted(t, fx, tg, func() {
		// The premise: pg_dump is still reading the table. Without it the
		// backup fails only on the snapshot session's COMMIT.
		if n := fx.shop.Psql(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = 'doomed' AND application_name LIKE 'scalr-backup-dump-%' AND state = 'active';"); n != "1" {
			t.Errorf("pg_dump of doomed is not running when the database is dropped (%s such backends): the filler is too small for the buffers in between", n)
		}
		fx.shop.Psql(t, "postgres", "DROP DATABASE doomed WITH (FORCE);")
	})
	t.Logf("dropped mid-dump: %v", err)
	if err == nil || !strings.Contains(err.Error(), "scalr-shop-db") || !strings.Contains(err.Error(), "pg_dump") || !strings.Contains(err.Error(), "no snapshot was saved") {
		t.Errorf("error %v", err)
	}
	if n := countSnapshots(t, fx.r); n != n0 {
		t.Errorf("%d snapshots, want %d", n, n0)
	}
	// A database that is gone before its dump starts.
	_, err = BackupContainer(ctx, fx.dc, fx.r, tg, BackupOptions{})
	if !errors.Is(err, ErrDatabaseMissing) || !strings.Contains(err.Error(), `"doomed"`) {
		t.Errorf("missing database: %v", err)
	}
	if n := countSnapshots(t, fx.r); n != n0 {
		t.Errorf("%d snapshots, want %d", n, n0)
	}
}

// backupInterrupted backs tg up and runs interrupt once the first chunk of
// the dump is stored, while the dump is held mid-stream.
func backupInterrupted(t *testing.T, fx *pgFixture, tg Target, interrupt func()) error {
	started, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		_, err := BackupContainer(context.Background(), fx.dc, fx.r, tg, BackupOptions{Progress: func(p repo.BackupProgress) {
			if p.BytesRead < 1<<20 || !strings.HasSuffix(p.File, "/"+DumpFileName(tg.Databases[len(tg.Databases)-1])) {
				return
			}
			once.Do(func() { close(started) })
			<-proceed
		}})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		close(proceed)
		t.Fatalf("the backup ended before it could be interrupted: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the backup did not start")
	}
	interrupt()
	close(proceed)
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Minute):
		t.Fatal("the interrupted backup did not end")
	}
	return nil
}

// testRestore: damage, then Restore brings back exactly the snapshot's
// data; for scalr-auth-postgres the database is "postgres" itself.
func (fx *pgFixture) testRestore(t *testing.T) {
	ctx := context.Background()
	fx.app.Psql(t, "", `DELETE FROM users WHERE id > 500 AND id NOT IN (SELECT user_id FROM orders); DELETE FROM big WHERE id % 3 = 0; DROP TABLE "Überprüfung ✓"; INSERT INTO events (v) VALUES ('after the backup');`)
	fx.auth.Psql(t, "", `DELETE FROM sessions WHERE id < 5; DROP TABLE audit;`)
	// A session that must be ended by the restore.
	holdCtx, stopHold := context.WithCancel(ctx)
	hold := fx.d.Command(holdCtx, "exec", fx.app.Name, "psql", "-U", "app", "-d", "app", "-c", "SELECT pg_sleep(600);")
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stopHold(); hold.Wait() }()
	time.Sleep(300 * time.Millisecond)

	wb0 := procWriteBytes(t)
	for _, name := range []string{"scalr-app-db", "scalr-auth-postgres"} {
		step := time.Now()
		res, err := Restore(ctx, fx.dc, fx.r, name, "latest", RestoreOptions{})
		if err != nil {
			t.Fatalf("restore of %s: %v", name, err)
		}
		// Every database of the snapshot, as backed up.
		var restored, backedUp []string
		for _, db := range res.Databases {
			restored = append(restored, db.Name)
		}
		for _, db := range fx.results[name].Manifest.Databases {
			backedUp = append(backedUp, db.Name)
		}
		if len(res.Mismatches()) != 0 || fmt.Sprint(restored) != fmt.Sprint(backedUp) {
			t.Errorf("%s: restored %q of %q: %+v", name, restored, backedUp, res)
		}
		t.Logf("restore of %s: %s", name, time.Since(step).Round(time.Millisecond))
	}
	if written := procWriteBytes(t) - wb0; written > 8<<20 {
		t.Errorf("this process wrote %d bytes to storage while restoring", written)
	}
	sameSums(t, "scalr-app-db restored", checksums(t, fx.app, "app", "public.events"), fx.sums["scalr-app-db/app"])
	sameSums(t, "scalr-app-db's postgres restored", checksums(t, fx.app, "postgres"), fx.sums["scalr-app-db/postgres"])
	if got, want := fx.app.Psql(t, "", "SELECT count(*) FROM events;"), tableRows(fx.results["scalr-app-db"].Manifest, "app", "public", "events"); got != strconv.FormatInt(want, 10) {
		t.Errorf("events after the restore: %s rows, manifest %d", got, want)
	}
	sameSums(t, "scalr-auth-postgres restored", checksums(t, fx.auth, "postgres"), fx.sums["scalr-auth-postgres/postgres"])
	// Database-level settings, comment and privileges came back with
	// the database (pg_restore --create); objects belong to POSTGRES_USER.
	got := fx.app.Psql(t, "", `SELECT pg_get_userbyid(d.datdba), shobj_description(d.oid, 'pg_database'),
  (SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0),
  has_database_privilege('reporting', 'app', 'CONNECT'), has_table_privilege('reporting', 'users', 'SELECT'),
  (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'big')
FROM pg_database d WHERE d.datname = 'app';`)
	if got != "app|the app's database|work_mem=8MB|t|t|app" {
		t.Errorf("restored database: owner|comment|settings|connect|select|table owner = %q", got)
	}
}

// testDrill: drills pass on good snapshots, fail naming the table on a
// tampered manifest, and leave no throwaway container behind.
func (fx *pgFixture) testDrill(t *testing.T) {
	ctx := context.Background()
	volsBefore := fx.d.CLI(t, "volume", "ls", "--quiet")
	for _, name := range []string{"scalr-app-db", "scalr-shop-db", "scalr-auth-postgres"} {
		step := time.Now()
		res, err := Drill(ctx, fx.dc, fx.r, name, DrillOptions{Hostname: "it-host"})
		if err != nil {
			t.Fatalf("drill of %s: %v", name, err)
		}
		if !res.Passed || res.RecordID.IsNull() || res.Snapshot != fx.results[name].SnapshotID.String() {
			t.Errorf("drill of %s: %+v", name, res)
		}
		t.Logf("drill of %s: %s", name, time.Since(step).Round(time.Millisecond))
	}

	// A backup whose manifest disagrees with its dump, made through the
	// library from the last good one.
	name := "scalr-auth-postgres"
	sn, m, err := FindBackup(ctx, fx.r, name, "latest", "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Databases[0].Tables {
		if m.Databases[0].Tables[i].Name == "sessions" {
			m.Databases[0].Tables[i].Rows++
		}
	}
	buf, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var streams []repo.Stream
	for _, f := range []string{m.Databases[0].File, m.Globals.File} {
		node, err := fx.r.FindNode(ctx, sn, "/"+name+"/"+f)
		if err != nil {
			t.Fatal(err)
		}
		fr, err := fx.r.OpenFile(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		defer fr.Close()
		streams = append(streams, repo.Stream{Name: f, Reader: fr})
	}
	streams = append(streams, repo.Stream{Name: ManifestFile, Reader: bytes.NewReader(buf)})
	if _, err := fx.r.BackupStreams(ctx, name, streams, repo.BackupOptions{Tags: []string{name}}); err != nil {
		t.Fatal(err)
	}
	res, err := Drill(ctx, fx.dc, fx.r, name, DrillOptions{})
	t.Logf("tampered: %v", err)
	if !errors.Is(err, ErrCountMismatch) || !strings.Contains(err.Error(), "public.sessions: 11 rows in the manifest, 10 restored") || res.Passed {
		t.Errorf("drill of a tampered manifest: %v", err)
	}
	rec, err := fx.r.FindSnapshot(ctx, "latest", repo.SnapshotFilter{Tags: []string{DrillTag + "," + DrillOfTagPrefix + name + "," + DrillFailedTag}})
	if err != nil || rec.ID != res.RecordID {
		t.Errorf("failed drill record: %v", err)
	}
	if left := fx.d.CLI(t, "ps", "--all", "--quiet", "--filter", "name=scalr-drill-"); left != "" {
		t.Errorf("drill containers left behind: %s", left)
	}
	if vols := fx.d.CLI(t, "volume", "ls", "--quiet"); vols != volsBefore {
		t.Errorf("volumes before the drills:\n%s\nafter:\n%s", volsBefore, vols)
	}
}

// testKilledContainer: the container killed in the middle of its dump.
func (fx *pgFixture) testKilledContainer(t *testing.T) {
	ctx := context.Background()
	tg, err := InspectTarget(ctx, fx.dc, fx.verify.Name, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tg.Databases = []string{"v_scalr_app_db_app"}
	n0 := countSnapshots(t, fx.r)
	err = backupInterrupted(t, fx, tg, func() { fx.d.CLI(t, "kill", fx.verify.Name) })
	t.Logf("killed mid-dump: %v", err)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), fx.verify.Name) || !strings.Contains(err.Error(), "no snapshot was saved") {
		t.Errorf("error %v", err)
	}
	if n := countSnapshots(t, fx.r); n != n0 {
		t.Errorf("%d snapshots, want %d", n, n0)
	}
	if _, err := InspectTarget(ctx, fx.dc, fx.verify.Name, Options{}); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), fx.verify.Name+" is exited") {
		t.Errorf("stopped container: %v", err)
	}
	if _, err := InspectTarget(ctx, fx.dc, fx.verify.Name, Options{}); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), fx.verify.Name+" is exited") {
		t.Errorf("stopped container: %v", err)
	}
}
