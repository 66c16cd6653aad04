package pgstream

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// Where the container probe finds a working stdbuf, each pg_dump runs
// under stdbuf -o1M (its output in 1 MiB writes, not stdio's 4 KiB ones)
// and the dumps are stored as pg_dump wrote them; pg_dumpall, small, runs
// as it is. A failure is still pg_dump's, by name and exit code.
func TestBackupDumpsUnderStdbuf(t *testing.T) {
	f, pg, tg := setupBackup(t)
	pg.stdbuf = true
	ctx := context.Background()
	r := memRepo(t)
	res, err := BackupContainer(ctx, f, r, tg, BackupOptions{Hostname: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, r, res.Snapshot, "/scalr-app-db/app.pgdump"); !bytes.Equal(got, pg.dump["app"]) {
		t.Fatalf("app.pgdump: %d bytes, want %d", len(got), len(pg.dump["app"]))
	}
	if len(pg.stdbufRuns) != 2 || len(pg.dumpArgs) != 2 {
		t.Fatalf("%d runs through stdbuf, %d of pg_dump; want 2 and 2: %q", len(pg.stdbufRuns), len(pg.dumpArgs), pg.stdbufRuns)
	}
	for _, c := range pg.stdbufRuns {
		if c[1] != "-o"+dumpOutputBuffer || c[2] != "pg_dump" || !slices.Contains(c, "-Fc") {
			t.Errorf("through stdbuf: %q", c)
		}
	}
	for _, c := range f.execLog {
		if c[0] == "stdbuf" && slices.Contains(c, "pg_dumpall") {
			t.Errorf("pg_dumpall ran through stdbuf: %q", c)
		}
	}

	// Without stdbuf in the container: pg_dump alone.
	pg.stdbuf = false
	pg.stdbufRuns, pg.dumpArgs = nil, nil
	if tg, err = InspectTarget(ctx, f, "scalr-app-db", Options{}); err != nil {
		t.Fatal(err)
	}
	tg.Databases = []string{"app"}
	if _, err := BackupContainer(ctx, f, r, tg, BackupOptions{Hostname: "h1"}); err != nil {
		t.Fatal(err)
	}
	if len(pg.stdbufRuns) != 0 || len(pg.dumpArgs) != 1 {
		t.Fatalf("without stdbuf: %d runs through it, %d of pg_dump", len(pg.stdbufRuns), len(pg.dumpArgs))
	}

	// A failing pg_dump under stdbuf is reported as pg_dump's failure.
	pg.stdbuf = true
	pg.dumpHook = func(x *execCall) (int, bool) {
		x.Stderr.Write([]byte("pg_dump: error: query failed: out of memory\n"))
		return 1, true
	}
	_, err = BackupContainer(ctx, f, r, tg, BackupOptions{Hostname: "h1"})
	if err == nil || !strings.Contains(err.Error(), "pg_dump in container scalr-app-db failed (exit code 1): pg_dump: error: query failed") || strings.Contains(err.Error(), "stdbuf") {
		t.Fatalf("failing pg_dump under stdbuf: %v", err)
	}
}
