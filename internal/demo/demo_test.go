// Package demo is `make demo`: the nightly pass end to end on this machine,
// printed step by step. It starts a private Docker engine with two
// scalr-*-db Postgres containers holding sample data and an S3 server on
// loopback, runs `scalr-backup run`, damages a database, restores it,
// runs a restore drill, and cleans everything up.
//
// It is a Go test only to reuse the project's service harness
// (internal/testenv); it runs only with SCALR_BACKUP_DEMO=1.
package demo

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

func TestDemo(t *testing.T) {
	if os.Getenv("SCALR_BACKUP_DEMO") != "1" {
		t.Skip("run with `make demo` (SCALR_BACKUP_DEMO=1)")
	}
	start := time.Now()
	step := func(format string, args ...any) {
		fmt.Printf("\n==> [%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	step("building scalr-backup")
	bin := filepath.Join(t.TempDir(), "scalr-backup")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/scalr-backup")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		t.Fatal(err)
	}

	step("starting a private Docker engine and loading the Postgres 15 image")
	d := testenv.StartDocker(t)
	d.PostgresImage(t)
	step("starting an S3 server (versitygw) on loopback")
	s3 := testenv.StartS3(t)

	step("starting scalr-app-db and scalr-shop-db with sample data")
	app := d.RunPostgres(t, "scalr-app-db", map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}, nil)
	shop := d.RunPostgres(t, "scalr-shop-db", map[string]string{"POSTGRES_USER": "shop", "POSTGRES_DB": "shop"}, nil)
	app.Psql(t, "app", `CREATE TABLE users (id int PRIMARY KEY, email text);
		INSERT INTO users SELECT i, 'user' || i || '@example.com' FROM generate_series(1, 5000) i;
		CREATE TABLE events (id bigserial PRIMARY KEY, user_id int, payload text);
		INSERT INTO events (user_id, payload) SELECT i % 5000, repeat(md5(i::text), 4) FROM generate_series(1, 200000) i;`)
	shop.Psql(t, "shop", `CREATE TABLE orders (id int PRIMARY KEY, total numeric);
		INSERT INTO orders SELECT i, i * 1.5 FROM generate_series(1, 20000) i;`)
	counts := func(c *testenv.Container, db string, tables ...string) string {
		var parts []string
		for _, tb := range tables {
			parts = append(parts, tb+"="+strings.TrimSpace(c.Psql(t, db, "SELECT count(*) FROM "+tb+";")))
		}
		return strings.Join(parts, " ")
	}
	fmt.Printf("    scalr-app-db:  %s\n    scalr-shop-db: %s\n", counts(app, "app", "users", "events"), counts(shop, "shop", "orders"))

	pwFile := filepath.Join(t.TempDir(), "restic-password")
	if err := os.WriteFile(pwFile, []byte("demo-password-"+fmt.Sprint(time.Now().UnixNano())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), d.Env()...)
	env = append(env, s3.Env()...)
	env = append(env,
		"RESTIC_REPOSITORY="+s3.URL("scalr-demo-backups"),
		"RESTIC_PASSWORD_FILE="+pwFile,
		"SCALR_BACKUP_LOG_FORMAT=text",
		"SCALR_BACKUP_METRICS_ADDR=off",
	)
	run := func(stdin string, args ...string) string {
		fmt.Printf("    $ scalr-backup %s\n", strings.Join(args, " "))
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		err := cmd.Run()
		for _, line := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
			fmt.Println("    " + line)
		}
		if err != nil {
			t.Fatalf("scalr-backup %s: %v", strings.Join(args, " "), err)
		}
		return out.String()
	}

	step("discovering the Postgres containers")
	run("", "discover")
	step("the nightly pass: create the repository, back up every container, forget (30 daily / 4 weekly / 6 monthly), prune")
	run("", "run", "--init")
	run("", "snapshots")

	step("damaging scalr-app-db: deleting most users and dropping the events table")
	app.Psql(t, "app", "DELETE FROM users WHERE id > 100; DROP TABLE events;")
	fmt.Printf("    scalr-app-db now: %s (events dropped)\n", counts(app, "app", "users"))

	step("restoring scalr-app-db from its latest snapshot")
	run("", "restore", "scalr-app-db", "latest", "--yes")
	fmt.Printf("    restored row counts: %s\n", counts(app, "app", "users", "events"))

	step("restore drill: each latest snapshot restored into a throwaway container, row counts checked")
	run("", "drill")

	step("the repository, as the restic CLI would show it")
	run("", "snapshots")
	run("", "check", "--read-data")
	step("done in %s; the engine, containers and S3 server are stopped by the harness", time.Since(start).Round(time.Second))
}
