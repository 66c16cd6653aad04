package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/repo"
)

// TestNightlyWithPostgres runs the nightly service wired to pgstream
// against a real Docker engine: two app databases match the patterns (one
// of them broken), one container does not match. The pass backs up the
// good one, reports the broken one (hook, exit error) and leaves the
// unmatched one alone; a drill of the good one passes and is recorded; a
// second pass forgets nothing it should keep, drill records included.
func TestNightlyWithPostgres(t *testing.T) {
	testenv.Integration(t)
	start := time.Now()
	d := testenv.StartDocker(t)
	good := d.RunPostgres(t, "scalr-nightly-db", map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}, nil)
	good.Psql(t, "", `CREATE TABLE items (id int PRIMARY KEY, name text);
		INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 500) i;`)
	broken := d.RunPostgres(t, "scalr-broken-db", map[string]string{"POSTGRES_USER": "br", "POSTGRES_DB": "br"}, nil)
	broken.Psql(t, "postgres", `DROP DATABASE br;`)
	d.RunPostgres(t, "unrelated-postgres", nil, nil)
	t.Logf("dockerd and containers ready in %s", time.Since(start).Round(time.Millisecond))

	env := nightlyEnv(t)
	env["DOCKER_HOST"] = d.Host()
	hookLog := filepath.Join(t.TempDir(), "hook.log")
	env["SCALR_BACKUP_ON_FAILURE"] = fmt.Sprintf(`printf '%%s|%%s\n' "$SCALR_BACKUP_CONTAINER" "$SCALR_BACKUP_ERROR" >> %q`, hookLog)
	env["SCALR_BACKUP_TEXTFILE"] = filepath.Join(t.TempDir(), "scalr_backup.prom")
	ctx := context.Background()
	a, out, _ := nightlyApp(env)
	var logBuf testenv.LockedBuffer
	log := nightly.NewLogger(&logBuf, "json", false, slog.LevelDebug)
	cfg := mustConfig(t, env)
	w, err := a.nightlyDeps(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()

	err = a.nightlyRun(ctx, cfg, w, log)
	t.Logf("run:\n%s", out)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 container backups failed: scalr-broken-db") {
		t.Fatalf("run: %v\nlog:\n%s", err, logBuf.String())
	}
	if !strings.Contains(out.String(), "scalr-nightly-db") || strings.Contains(out.String(), "unrelated-postgres") {
		t.Errorf("table:\n%s", out)
	}
	hook, _ := os.ReadFile(hookLog)
	if !strings.HasPrefix(string(hook), "scalr-broken-db|") || strings.Count(string(hook), "\n") != 1 {
		t.Errorf("hook: %q", hook)
	}
	for _, secret := range []string{good.Password, broken.Password, nightlyTestPassword} {
		if strings.Contains(out.String()+logBuf.String()+string(hook)+err.Error(), secret) {
			t.Error("a password appears in the output, log, hook or error")
		}
	}
	prom, _ := os.ReadFile(env["SCALR_BACKUP_TEXTFILE"])
	if !strings.Contains(string(prom), `scalr_backup_last_backup_success{container="scalr-nightly-db"} 1`) ||
		!strings.Contains(string(prom), `scalr_backup_last_backup_success{container="scalr-broken-db"} 0`) {
		t.Errorf("textfile:\n%s", prom)
	}

	// A drill of the good container, through the same wiring.
	cfg.Patterns = []string{"scalr-nightly-db"}
	w2, err := a.nightlyDeps(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.close()
	m := nightly.NewMetrics(0, nil)
	s := a.nightlyService(cfg, w2, log, m)
	drep := s.RunDrill(ctx)
	if !drep.OK() || len(drep.Targets) != 1 || len(drep.Targets[0].RecordID) != 64 {
		t.Fatalf("drill: %+v %+v\nlog:\n%s", drep.Targets, drep.Errors, logBuf.String())
	}

	// The second pass (good container only) succeeds and keeps the drill
	// record and both backups.
	if !strings.Contains(scrapeText(t, m), `scalr_backup_last_drill_success{container="scalr-nightly-db"} 1`) {
		t.Error("drill metric not set")
	}
	out.Reset()
	if err := a.nightlyRun(ctx, cfg, w2, log); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	r, err := repo.Open(ctx, local.New(env["RESTIC_REPOSITORY"]), nightlyTestPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	snaps, err := r.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inv := nightly.Inventory(snaps, "test-host")
	if len(inv) != 1 || inv[0].Container != "scalr-nightly-db" || inv[0].Snapshots != 2 || inv[0].LastDrill.IsZero() || !inv[0].LastDrillPassed {
		t.Errorf("inventory %+v (%d snapshots)", inv, len(snaps))
	}
	for _, sn := range snaps {
		if name, ok := nightly.ContainerOf(sn); ok && (name != "scalr-nightly-db" || sn.Hostname != "test-host") {
			t.Errorf("unexpected backup %v of %s", sn.Paths, sn.Hostname)
		}
	}
	if locks, err := r.ListLocks(ctx); err != nil || len(locks) != 0 {
		t.Errorf("locks left: %v %v", locks, err)
	}
}

func scrapeText(t *testing.T, m *nightly.Metrics) string {
	t.Helper()
	rr := httptest.NewRecorder()
	m.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	return rr.Body.String()
}
