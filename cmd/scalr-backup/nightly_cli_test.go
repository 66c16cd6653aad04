package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/pgstream"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

const nightlyTestPassword = "nightly test password"

// nightlyEnv creates a local repository with a cheap KDF and returns the
// environment pointing at it.
func nightlyEnv(t *testing.T) map[string]string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := repo.Init(context.Background(), local.New(dir), nightlyTestPassword,
		repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	return map[string]string{"RESTIC_REPOSITORY": dir, "RESTIC_PASSWORD": nightlyTestPassword, "SCALR_BACKUP_HOST": "test-host"}
}

// nightlyApp is an app with its output in buffers.
func nightlyApp(env map[string]string) (*app, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	return a, &out, &errb
}

// fakeWiring stands in for pgstream: containers are names, a backup is a
// small stream snapshot shaped like pgstream's (tag NAME, paths ["/NAME"]).
type fakeWiring struct {
	mu      sync.Mutex
	names   []string
	failing map[string]bool
	calls   int
}

func (f *fakeWiring) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeWiring) wiring() nightlyWiring {
	return nightlyWiring{
		discover: nightly.DiscoverFunc(func(context.Context) ([]nightly.Target, error) {
			var out []nightly.Target
			for _, n := range f.names {
				out = append(out, nightly.Target{Name: n})
			}
			return out, nil
		}),
		backup: func(ctx context.Context, r *repo.Repository, t nightly.Target) (nightly.BackupResult, error) {
			f.mu.Lock()
			f.calls++
			fail := f.failing[t.Name]
			f.mu.Unlock()
			if fail {
				return nightly.BackupResult{}, fmt.Errorf("backup of container %s: pg_dump: connection refused; no snapshot was saved", t.Name)
			}
			data := bytes.Repeat([]byte(t.Name+" "), 2000)
			res, err := r.BackupStreams(ctx, t.Name, []repo.Stream{{Name: "db.pgdump", Reader: bytes.NewReader(data)}},
				repo.BackupOptions{Tags: []string{t.Name}, Hostname: "test-host"})
			if err != nil {
				return nightly.BackupResult{}, err
			}
			return nightly.BackupResult{SnapshotID: res.SnapshotID, BytesRead: uint64(len(data)), BytesAdded: res.Stats.DataAdded, BytesStored: res.Stats.DataAddedPacked}, nil
		},
		close: func() {},
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustConfig(t *testing.T, env map[string]string) nightly.Config {
	t.Helper()
	cfg, err := nightly.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestNightlyRunTableAndTextfile(t *testing.T) {
	env := nightlyEnv(t)
	prom := filepath.Join(t.TempDir(), "scalr_backup.prom")
	env["SCALR_BACKUP_TEXTFILE"] = prom
	a, out, _ := nightlyApp(env)
	fw := &fakeWiring{names: []string{"scalr-app-db", "scalr-auth-postgres"}, failing: map[string]bool{"scalr-app-db": true}}
	err := a.nightlyRun(context.Background(), mustConfig(t, env), fw.wiring(), quietLogger())
	if err == nil || !strings.Contains(err.Error(), "1 of 2 container backups failed: scalr-app-db") {
		t.Fatalf("error %v", err)
	}
	text := out.String()
	t.Log("\n" + text)
	for _, want := range []string{
		"CONTAINER", "STATUS", "DURATION", "READ", "ADDED", "SNAPSHOT",
		"scalr-app-db", "failed", "scalr-auth-postgres", "ok",
		"scalr-app-db: backup of container scalr-app-db: pg_dump: connection refused",
		"forget: keep 30 daily, 4 weekly, 6 monthly snapshots per container: removed 0 snapshots",
		"prune: removed", "pass FAILED in",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	buf, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`scalr_backup_last_backup_success{container="scalr-app-db"} 0`, `scalr_backup_last_backup_success{container="scalr-auth-postgres"} 1`, "scalr_backup_pass_failures_total 1"} {
		if !strings.Contains(string(buf), want) {
			t.Errorf("textfile lacks %q", want)
		}
	}
}

func TestNightlyRunJSON(t *testing.T) {
	env := nightlyEnv(t)
	a, out, _ := nightlyApp(env)
	a.jsonOutput = true
	fw := &fakeWiring{names: []string{"scalr-app-db", "scalr-auth-postgres"}}
	if err := a.nightlyRun(context.Background(), mustConfig(t, env), fw.wiring(), quietLogger()); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		OK      bool   `json:"ok"`
		Host    string `json:"host"`
		Targets []struct {
			Container  string  `json:"container"`
			Status     string  `json:"status"`
			SnapshotID string  `json:"snapshot_id"`
			BytesRead  uint64  `json:"total_bytes_processed"`
			BytesAdded uint64  `json:"data_added"`
			Seconds    float64 `json:"duration_seconds"`
		} `json:"targets"`
		Forget   json.RawMessage `json:"forget"`
		Prune    json.RawMessage `json:"prune"`
		Requests backend.Counts  `json:"requests"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	checkJSONConvention(t, "run --json", out.String())
	if !rep.OK || rep.Host != "test-host" || len(rep.Targets) != 2 || rep.Forget == nil || rep.Prune == nil || rep.Requests.Saves == 0 {
		t.Errorf("report %+v", rep)
	}
	for _, tr := range rep.Targets {
		if tr.Status != "ok" || len(tr.SnapshotID) != 64 || tr.BytesRead == 0 || tr.BytesAdded == 0 {
			t.Errorf("row %+v", tr)
		}
	}
}

func TestNightlyRunRepositoryErrors(t *testing.T) {
	ctx := context.Background()
	fw := &fakeWiring{names: []string{"scalr-app-db"}}

	// No repository: the error keeps backend.ErrNoRepository (exit code 10).
	env := map[string]string{"RESTIC_REPOSITORY": filepath.Join(t.TempDir(), "none"), "RESTIC_PASSWORD": "pw", "SCALR_BACKUP_HOST": "h"}
	a, _, _ := nightlyApp(env)
	err := a.nightlyRun(ctx, mustConfig(t, env), fw.wiring(), quietLogger())
	if !errors.Is(err, backend.ErrNoRepository) {
		t.Errorf("missing repository: %v", err)
	}
	if fw.callCount() != 0 {
		t.Error("backed up without a repository")
	}

	// Wrong password: repo.ErrWrongPassword (exit code 12).
	env = nightlyEnv(t)
	env["RESTIC_PASSWORD"] = "wrong"
	a, _, _ = nightlyApp(env)
	if err := a.nightlyRun(ctx, mustConfig(t, env), fw.wiring(), quietLogger()); !errors.Is(err, repo.ErrWrongPassword) {
		t.Errorf("wrong password: %v", err)
	}

	// --init creates the repository, then the pass runs.
	if testing.Short() {
		return
	}
	dir := filepath.Join(t.TempDir(), "new")
	env = map[string]string{"RESTIC_REPOSITORY": dir, "RESTIC_PASSWORD": "pw", "SCALR_BACKUP_HOST": "h", "SCALR_BACKUP_INIT": "true"}
	a, _, errb := nightlyApp(env)
	if err := a.nightlyRun(ctx, mustConfig(t, env), fw.wiring(), nightly.NewLogger(errb, "text", false, slog.LevelInfo)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errb.String(), "created a new repository") || strings.Contains(errb.String(), "pw") {
		t.Errorf("log: %s", errb)
	}
	if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
		t.Error("no repository created")
	}
}

// A pass that cannot open the repository says so once in the log, once in
// the report, and the exit line adds only the hint and the exit code: not
// the same error three times (issue 13).
func TestNightlyRunFatalErrorOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  func(t *testing.T) map[string]string
		msg  string
		code int
		hint string
	}{
		{"no repository", func(t *testing.T) map[string]string {
			return map[string]string{"RESTIC_REPOSITORY": filepath.Join(t.TempDir(), "none"), "RESTIC_PASSWORD": "pw", "SCALR_BACKUP_HOST": "h"}
		}, "repository does not exist", exitNoRepo, "scalr-backup init creates the repository"},
		{"wrong password", func(t *testing.T) map[string]string {
			env := nightlyEnv(t)
			env["RESTIC_PASSWORD"] = "wrong"
			return env
		}, "wrong password", exitWrongPass, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, args := range [][]string{{"run"}, {"run", "--json"}, {"run", "--log-format", "text"}} {
				a, out, errb := nightlyApp(tc.env(t))
				code := a.run(context.Background(), args)
				all := out.String() + errb.String()
				if code != tc.code {
					t.Errorf("%q: exit %d, want %d\n%s", args, code, tc.code, all)
				}
				// The error (and the pass's end) in the log; the report.
				if n := strings.Count(all, tc.msg); n != 2 {
					t.Errorf("%q: the error appears %d times, want 2 (log, report):\n%s", args, n, all)
				}
				if strings.Contains(errb.String(), "scalr-backup: ") {
					t.Errorf("%q: the exit line repeats the error:\n%s", args, errb)
				}
				if tc.hint != "" && !strings.Contains(errb.String(), tc.hint) {
					t.Errorf("%q: no hint %q:\n%s", args, tc.hint, errb)
				}
			}
		})
	}
}

func TestNightlyDaemonCLI(t *testing.T) {
	env := nightlyEnv(t)
	a, _, errb := nightlyApp(env)
	cfg := mustConfig(t, env)
	o := daemonOptions{schedule: "@every 1s", drillSchedule: "off", metricsAddr: "127.0.0.1:0"}
	if err := o.apply(&cfg); err != nil {
		t.Fatal(err)
	}
	addrCh := make(chan net.Addr, 1)
	o.listening = func(ad net.Addr) { addrCh <- ad }
	var logBuf testenv.LockedBuffer
	log := nightly.NewLogger(&logBuf, "json", false, slog.LevelInfo)
	fw := &fakeWiring{names: []string{"scalr-app-db"}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.nightlyDaemon(ctx, cfg, fw.wiring(), log, o) }()
	var addr string
	select {
	case ad := <-addrCh:
		addr = ad.String()
	case <-time.After(10 * time.Second):
		t.Fatal("no metrics listener")
	}
	// Healthy once a pass went through.
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 && fw.callCount() > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never healthy; log:\n%s", logBuf.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	hc := a.daemonCommand()
	hc.SetArgs([]string{"healthcheck", "--metrics-addr", addr})
	var hcOut bytes.Buffer
	a.stdout = &hcOut
	if err := hc.ExecuteContext(context.Background()); err != nil || !strings.Contains(hcOut.String(), `"ok":true`) {
		t.Errorf("healthcheck: %v %s", err, hcOut.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop")
	}
	// JSON log lines, nothing secret in them.
	logs := logBuf.String()
	if !strings.Contains(logs, `"msg":"backup pass finished"`) || strings.Contains(logs, nightlyTestPassword) {
		t.Errorf("logs:\n%s", logs)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("not a JSON line: %q", line)
		}
	}
	_ = errb
	// The healthcheck fails when nothing answers.
	hc = a.daemonCommand()
	hc.SetArgs([]string{"healthcheck", "--metrics-addr", freeAddr(t)})
	hc.SilenceErrors, hc.SilenceUsage = true, true
	if err := hc.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("healthcheck without daemon: %v", err)
	}
	r, err := repo.Open(context.Background(), local.New(env["RESTIC_REPOSITORY"]), nightlyTestPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if locks, err := r.ListLocks(context.Background()); err != nil || len(locks) != 0 {
		t.Errorf("locks left: %v %v", locks, err)
	}
}

func TestNightlyFlags(t *testing.T) {
	env := map[string]string{"SCALR_BACKUP_HOST": "h"}
	a, _, _ := nightlyApp(env)
	cfg, err := a.nightlyConfig(&nightlyFlags{init: true, disc: discoverFlags{patterns: []string{"x-*"}, databases: []string{"POSTGRES_DB,rep*"}}, logFormat: "json", host: "other"})
	if err != nil || !cfg.Init || cfg.Patterns[0] != "x-*" || cfg.LogFormat != "json" || cfg.Host != "other" ||
		strings.Join(cfg.Databases, " ") != "POSTGRES_DB rep*" {
		t.Errorf("flags: %+v %v", cfg, err)
	}
	if _, err := a.nightlyConfig(&nightlyFlags{logFormat: "xml"}); err == nil {
		t.Error("bad --log-format accepted")
	}
	env["SCALR_BACKUP_KEEP_DAILY"] = "lots"
	if _, err := a.nightlyConfig(&nightlyFlags{}); err == nil || !strings.Contains(err.Error(), "SCALR_BACKUP_KEEP_DAILY") {
		t.Errorf("bad environment: %v", err)
	}
	for _, o := range []daemonOptions{{schedule: "nope"}, {drillSchedule: "61 * * * *"}, {metricsAddr: "9187"}, {shutdownGrace: -time.Second}} {
		c := nightly.Config{}
		if err := o.apply(&c); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	c := nightly.Config{DrillSchedule: "0 5 1 * *", MetricsAddr: "127.0.0.1:9187"}
	if err := (&daemonOptions{drillSchedule: "off", metricsAddr: "off", schedule: "0 1 * * *"}).apply(&c); err != nil || c.DrillSchedule != "" || c.MetricsAddr != "" || c.Schedule != "0 1 * * *" {
		t.Errorf("off: %+v %v", c, err)
	}
}

func TestNightlyHelp(t *testing.T) {
	a, out, _ := nightlyApp(nil)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"run", "--help"}, []string{"Examples:", "--init", "--textfile", "SCALR_BACKUP_SCHEDULE", "SCALR_BACKUP_ON_FAILURE", "exit code"}},
		{[]string{"daemon", "--help"}, []string{"Examples:", "--schedule", "--metrics-addr", "/healthz", "SIGTERM"}},
		{[]string{"daemon", "healthcheck", "--help"}, []string{"Examples:", "--metrics-addr"}},
	} {
		out.Reset()
		root := a.rootCommand()
		if c, _, err := root.Find([]string{"run"}); err != nil || c == root {
			root.AddCommand(a.runCommand())
		}
		if c, _, err := root.Find([]string{"daemon"}); err != nil || c == root {
			root.AddCommand(a.daemonCommand())
		}
		root.SetArgs(tc.args)
		root.SetOut(out)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v lacks %q", tc.args, w)
			}
		}
	}
}

// The wiring must agree with pgstream on what a container backup and a
// drill record look like.
func TestNightlyAgreesWithPgstream(t *testing.T) {
	if nightly.DrillTag != pgstream.DrillTag || nightly.DrillPassedTag != pgstream.DrillPassedTag || nightly.DrillFailedTag != pgstream.DrillFailedTag {
		t.Error("drill tags differ")
	}
	name := "scalr-app-db"
	sn := &repo.Snapshot{Paths: []string{"/" + name}, Tags: []string{name}}
	if got, ok := nightly.ContainerOf(sn); !ok || got != name || !pgstream.ContainerSnapshotFilter(name, "").Matches(sn) {
		t.Error("container backup shape differs")
	}
	drill := &repo.Snapshot{Paths: []string{pgstream.DrillRecordPath(name)}, Tags: []string{pgstream.DrillTag, name, pgstream.DrillPassedTag}, Time: time.Now()}
	if _, ok := nightly.ContainerOf(drill); ok || pgstream.ContainerSnapshotFilter(name, "").Matches(drill) {
		t.Error("a drill record passes for a backup")
	}
	inv := nightly.Inventory([]*repo.Snapshot{drill}, "")
	if len(inv) != 1 || inv[0].Container != name || !inv[0].LastDrillPassed {
		t.Errorf("drill record not recognised: %+v", inv)
	}
	// A target that did not come from discovery is refused, not guessed.
	a, _, _ := nightlyApp(nil)
	w, err := a.nightlyDeps(context.Background(), nightly.Config{Host: "h"}, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if _, err := w.backup(context.Background(), nil, nightly.Target{Name: "x"}); err == nil || !strings.Contains(err.Error(), "not found by discovery") {
		t.Errorf("foreign target: %v", err)
	}
}
