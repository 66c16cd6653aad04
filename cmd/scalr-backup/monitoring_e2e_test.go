package main

// Issue 11's acceptance points, end to end through the real binary (run,
// daemon, retire, drill, pg-backup, snapshots), a private dockerd with real
// Postgres containers and versitygw behind testenv's fault proxy:
//
//  1. expected-set: backed-up containers that stop, crash in a restart
//     loop, are paused, removed or renamed are named by `run` (exit 1, the
//     others backed up) and become stale in the daemon within STALE_AFTER +
//     one check interval: /healthz 503 naming each, the hook once each, the
//     stale gauge 1; retire takes one out.
//  2. startup: a wrong password, unreachable storage, no Docker socket:
//     /healthz 503 with the reason within 10 s of start; fixed, 200 after
//     the next check.
//  3. restart: a restarted healthy daemon shows the repository's newest
//     backup times at once (and no made-up pass metrics).
//  4. retries: with storage down, the first retry line within 5 s
//     (snapshots, run, run on a terminal); the failed pass reports its
//     real duration and retry count.
//  5. drill-concurrent: a drill of another host's backups while that host
//     backs up again: no false failure.
//
// Helpers come from nightly_e2e_test.go (e2eFixture, e2eRepo, e2eScrape...).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

const (
	monOK    = "scalr-monok-db"
	monStop  = "scalr-monstop-db"
	monLoop  = "scalr-monloop-db"
	monPause = "scalr-monpause-db"
	monGone  = "scalr-mongone-db"
	monRen   = "scalr-monren-db"
	monDrA   = "scalr-mondra-db"
	monDrB   = "scalr-mondrb-db"
	monRst   = "scalr-monrst-db"
	// monPatterns selects the six containers of acceptance 1.
	monPatterns = "scalr-mon*-db"
)

func TestMonitoringE2E(t *testing.T) {
	testenv.Integration(t)
	begin := time.Now()
	fx := &e2eFixture{bin: testBinary(t)}
	fx.restic = testenv.Restic(t, testenv.Restic0181)
	fx.s3 = testenv.StartS3(t)
	fx.d = testenv.StartDocker(t)
	t.Logf("binary, dockerd, versitygw ready in %s", time.Since(begin).Round(time.Millisecond))
	for _, st := range []struct {
		name string
		fn   func(*testing.T, *e2eFixture)
	}{
		{"expected-set", monExpectedSet},
		{"startup", monStartup},
		{"restart", monRestart},
		{"retries", monRetries},
		{"drill-concurrent", monDrillConcurrent},
	} {
		step := time.Now()
		t.Run(st.name, func(t *testing.T) { st.fn(t, fx) })
		t.Logf("%s: %s", st.name, time.Since(step).Round(time.Millisecond))
	}
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}

// monRun is a run --json report's part these tests read.
type monRun struct {
	OK       bool    `json:"ok"`
	Seconds  float64 `json:"duration_seconds"`
	Requests struct {
		Retries int `json:"retries"`
		Loads   int `json:"loads"`
		Stats   int `json:"stats"`
		Lists   int `json:"lists"`
	} `json:"requests"`
	Targets []struct {
		Container  string `json:"container"`
		Status     string `json:"status"`
		SnapshotID string `json:"snapshot_id"`
		Error      string `json:"error"`
		Missing    bool   `json:"missing"`
	} `json:"targets"`
	Errors []struct {
		Stage string `json:"stage"`
		Error string `json:"error"`
	} `json:"errors"`
}

func monDecode(t *testing.T, res e2eResult) monRun {
	t.Helper()
	var rep monRun
	if err := json.Unmarshal(res.stdout, &rep); err != nil {
		t.Fatalf("run --json: %v\n%s", err, res)
	}
	return rep
}

// ---------------------------------------------------------------------------
// 1. The expected set.

func monExpectedSet(t *testing.T, fx *e2eFixture) {
	const staleAfter, interval = 45 * time.Second, 2 * time.Second
	start := time.Now()
	var secrets []string
	for _, n := range []string{monOK, monStop, monLoop, monPause, monGone, monRen} {
		secrets = append(secrets, fx.postgres(t, n, 200).Password)
	}
	// The removed and renamed containers are gone when RunPostgres's
	// cleanup removes them by name: put placeholders there first.
	t.Cleanup(func() {
		for _, n := range []string{monGone, monRen} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_, _ = fx.d.Run(ctx, nil, "rm", "--force", n+"-renamed")
			_, _ = fx.d.Run(ctx, nil, "create", "--name", n, testenv.PostgresImageNameFor(15), "true")
			cancel()
		}
	})
	t.Logf("6 containers in %s", time.Since(start).Round(time.Millisecond))
	r := fx.newRepo(t, "expected", true)
	hook := r.hookFile(t)
	r.env = append(r.env, "SCALR_BACKUP_PATTERNS="+monPatterns, fmt.Sprintf("SCALR_BACKUP_STALE_AFTER=%ds", int(staleAfter.Seconds())),
		"SCALR_BACKUP_CHECK_INTERVAL=2s")

	res := r.mustRun(t, "run", "--json")
	t0 := time.Now()
	if rep := monDecode(t, res); !rep.OK || len(rep.Targets) != 6 {
		t.Fatalf("first run: %s", res)
	}
	t.Logf("first run backed up 6 containers in %s", res.took.Round(time.Millisecond))

	// Stopped; restart loop (a setting Postgres refuses, then its main
	// process ends: restart policy always brings it back, and it dies
	// again); paused; removed; renamed.
	fx.d.CLI(t, "stop", monStop)
	fx.d.CLI(t, "update", "--restart", "always", monLoop)
	fx.d.CLI(t, "exec", monLoop, "sh", "-c", `echo "shared_buffers = 'not a size'" >> "$PGDATA/postgresql.auto.conf" && kill -INT 1`)
	fx.d.CLI(t, "pause", monPause)
	fx.d.CLI(t, "rm", "--force", monGone)
	fx.d.CLI(t, "rename", monRen, monRen+"-renamed")
	deadline := time.Now().Add(60 * time.Second)
	for {
		state := fx.d.CLI(t, "inspect", "--format", "{{.State.Status}} {{.RestartCount}}", monLoop)
		if strings.HasPrefix(state, "restarting") || (strings.HasPrefix(state, "exited") && !strings.HasSuffix(state, " 0")) {
			t.Logf("%s: %s", monLoop, state)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not in a restart loop: %s\n%s", monLoop, state, fx.d.CLI(t, "logs", "--tail", "20", monLoop))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// run names every one of them and still backs up the healthy one.
	res = r.run(t, "run", "--json")
	if res.code != 1 {
		t.Errorf("run with five afflicted containers: exit %d, want 1\n%s", res.code, res)
	}
	rep := monDecode(t, res)
	got := map[string]string{}
	for _, tr := range rep.Targets {
		got[tr.Container] = tr.Status
		switch tr.Container {
		case monOK:
			if tr.Status != "ok" || len(tr.SnapshotID) != 64 {
				t.Errorf("%s: %+v", tr.Container, tr)
			}
		case monStop, monLoop, monPause:
			want := map[string]string{monStop: "exited", monLoop: "restarting", monPause: "paused"}[tr.Container]
			t.Logf("%s: %s", tr.Container, tr.Error)
			if tr.Status != "failed" || tr.Missing || !strings.Contains(tr.Error, tr.Container) {
				t.Errorf("%s: %+v", tr.Container, tr)
			}
			loopExited := tr.Container == monLoop && strings.Contains(tr.Error, "exited")
			if !strings.Contains(tr.Error, want) && !loopExited {
				t.Errorf("%s's error does not say %s: %s", tr.Container, want, tr.Error)
			}
		case monGone, monRen:
			t.Logf("%s: %s", tr.Container, tr.Error)
			if tr.Status != "failed" || !tr.Missing || !strings.Contains(tr.Error, "scalr-backup retire "+tr.Container) {
				t.Errorf("%s: %+v", tr.Container, tr)
			}
		}
	}
	if len(got) != 6 {
		t.Errorf("run reported %v, want the six containers", got)
	}
	for _, n := range []string{monStop, monLoop, monPause, monGone, monRen} {
		if !strings.Contains(string(res.stderr), n) {
			t.Errorf("run's stderr does not name %s", n)
		}
	}
	snaps := e2eByContainer(t, r.snapshots(t, true))
	if len(snaps[monOK]) != 2 {
		t.Errorf("%s has %d snapshots after two runs, want 2", monOK, len(snaps[monOK]))
	}
	for _, n := range []string{monStop, monLoop, monPause, monGone, monRen} {
		if len(snaps[n]) != 1 {
			t.Errorf("%s has %d snapshots, want the first run's only", n, len(snaps[n]))
		}
	}
	failHooks := e2eReadLines(t, hook)
	t.Logf("run fired %d failure hooks", len(failHooks))

	// The daemon (no pass due): each of the five becomes stale within
	// STALE_AFTER + one check interval of its newest backup.
	if len(snaps[monOK]) == 0 {
		t.Fatalf("%s has no snapshot", monOK)
	}
	okNewest := snaps[monOK][len(snaps[monOK])-1].Time
	// The healthy container's newest backup is only seconds younger than
	// the others': it must not be called stale while that backup is younger
	// than STALE_AFTER less a check interval. On a loaded machine a later
	// look may rightly find it stale.
	okYoung := func() bool { return time.Since(okNewest) < staleAfter-interval }
	d := r.startDaemon(t, "--schedule", "0 3 1 1 *")
	afflicted := []string{monGone, monLoop, monPause, monRen, monStop}
	var h e2eHealth
	e2eWaitFor(t, d, staleAfter+30*time.Second, "the five afflicted containers stale", func() bool {
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://" + r.metricsAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		h = e2eHealthz(t, r.metricsAddr)
		var names []string
		for _, s := range h.Health.Stale {
			if s.Container == monOK && okYoung() {
				t.Errorf("/healthz calls the healthy container stale while its newest backup is young: %s", h.raw)
			}
			if s.Container != monOK {
				names = append(names, s.Container)
			}
		}
		return slices.Equal(names, afflicted)
	})
	took := time.Since(t0)
	t.Logf("all five stale %s after their newest backup (STALE_AFTER %s, check interval %s): %s", took.Round(time.Millisecond), staleAfter, interval, h.raw)
	if took > staleAfter+interval+3*time.Second {
		t.Errorf("stale only %s after the backup, want within STALE_AFTER + one check interval (+3s for the test's own polling)", took.Round(time.Millisecond))
	}
	if h.status != http.StatusServiceUnavailable || h.Health.OK {
		t.Errorf("/healthz %d %s", h.status, h.raw)
	}
	for _, n := range afflicted {
		if !strings.Contains(strings.Join(h.Health.Reasons, "\n"), n) {
			t.Errorf("/healthz reasons do not name %s: %q", n, h.Health.Reasons)
		}
	}
	// Once per container, also after a few more checks.
	time.Sleep(3 * interval)
	m, err := e2eScrape(r.metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range afflicted {
		if v := m.must(t, "scalr_backup_stale", n); v != 1 {
			t.Errorf("scalr_backup_stale{container=%q} = %v", n, v)
		}
	}
	if v := m.must(t, "scalr_backup_stale", monOK); v != 0 && okYoung() {
		t.Errorf("the healthy container is stale with its newest backup %s old", time.Since(okNewest).Round(time.Millisecond))
	}
	if v := m.must(t, "scalr_backup_healthy", ""); v != 0 {
		t.Errorf("scalr_backup_healthy %v", v)
	}
	stale := e2eReadLines(t, hook)[len(failHooks):]
	count := map[string]int{}
	for _, l := range stale {
		f := strings.Split(l, "|")
		if len(f) < 3 || f[0] != "stale" || f[2] != "stale" {
			t.Errorf("hook line %q", l)
			continue
		}
		if f[1] == monOK && !okYoung() {
			continue // rightly stale by now, see okYoung
		}
		count[f[1]]++
	}
	for _, n := range afflicted {
		if count[n] != 1 {
			t.Errorf("stale hook fired %d times for %s, want once: %q", count[n], n, stale)
		}
	}
	if len(count) != len(afflicted) {
		t.Errorf("stale hooks for %v, want the five", count)
	}
	hc := r.run(t, "daemon", "healthcheck", "--metrics-addr", r.metricsAddr)
	if hc.code != 1 || !strings.Contains(string(hc.stdout), monGone) {
		t.Errorf("daemon healthcheck: %s", hc)
	}

	// The removed app was removed on purpose: retire it. The next check
	// takes it out of the expected set.
	ret := r.mustRun(t, "retire", monGone, "--reason", "app removed")
	t.Logf("retire: %s", strings.TrimSpace(string(ret.stdout)))
	e2eWaitFor(t, d, 15*time.Second, monGone+" no longer expected", func() bool {
		m, err := e2eScrape(r.metricsAddr)
		if err != nil {
			return false
		}
		_, there := m.of("scalr_backup_stale", monGone)
		return !there && !strings.Contains(e2eHealthz(t, r.metricsAddr).raw, monGone)
	})
	list := r.mustRun(t, "retire", "--list", "--json")
	var rows []struct {
		Container string `json:"container"`
		Active    bool   `json:"active"`
	}
	if err := json.Unmarshal(list.stdout, &rows); err != nil || len(rows) != 1 || rows[0].Container != monGone || !rows[0].Active {
		t.Errorf("retire --list: %v %s", err, list.stdout)
	}
	if code, _ := d.stop(t); code != 0 {
		t.Errorf("daemon exit %d", code)
	}
	res = r.run(t, "run", "--json")
	for _, tr := range monDecode(t, res).Targets {
		if tr.Container == monGone {
			t.Errorf("the retired container is still reported: %+v", tr)
		}
	}
	secrets = append(secrets, r.pw)
	for _, text := range [][]byte{d.stderr.Bytes(), res.stderr, res.stdout, []byte(strings.Join(e2eReadLines(t, hook), "\n"))} {
		for _, sec := range secrets {
			if strings.Contains(string(text), sec) {
				t.Error("a password appears in the output, log or hook")
			}
		}
	}
	// Back to normal for the other subtests.
	fx.d.CLI(t, "unpause", monPause)
}

// ---------------------------------------------------------------------------
// 2. Start-up checks.

func monStartup(t *testing.T, fx *e2eFixture) {
	healthWithin := func(t *testing.T, d *e2eDaemon, addr string, within time.Duration, what string, ok func(e2eHealth) bool) e2eHealth {
		t.Helper()
		var h e2eHealth
		start := time.Now()
		e2eWaitFor(t, d, within, what, func() bool {
			c := &http.Client{Timeout: 2 * time.Second}
			resp, err := c.Get("http://" + addr + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			h = e2eHealthz(t, addr)
			return ok(h)
		})
		t.Logf("%s after %s: %d %s", what, time.Since(start).Round(time.Millisecond), h.status, strings.TrimSpace(h.raw))
		return h
	}
	reason := func(h e2eHealth, s string) bool {
		return h.status == http.StatusServiceUnavailable && strings.Contains(strings.Join(h.Health.Reasons, "\n"), s)
	}
	newRepo := func(t *testing.T, label string) *e2eRepo {
		r := fx.newRepo(t, label, true)
		r.env = append(r.env, "SCALR_BACKUP_PATTERNS="+monOK, "SCALR_BACKUP_CHECK_INTERVAL=2s")
		return r
	}

	t.Run("wrong-password", func(t *testing.T) {
		r := newRepo(t, "pw")
		if err := os.WriteFile(r.pwFile, []byte("not the password\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		d := r.startDaemon(t, "--schedule", "0 3 1 1 *")
		healthWithin(t, d, r.metricsAddr, 10*time.Second, "503 naming the wrong password", func(h e2eHealth) bool {
			return reason(h, "repository: wrong password")
		})
		if hc := r.run(t, "daemon", "healthcheck", "--metrics-addr", r.metricsAddr); hc.code != 1 {
			t.Errorf("daemon healthcheck with a wrong password: %s", hc)
		}
		if err := os.WriteFile(r.pwFile, []byte(r.pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		healthWithin(t, d, r.metricsAddr, 15*time.Second, "200 once the password is right", func(h e2eHealth) bool { return h.status == 200 })
		d.stop(t)
	})

	t.Run("storage-down", func(t *testing.T) {
		r := newRepo(t, "down")
		proxy := testenv.StartFaultProxy(t, fx.s3.Endpoint, 11)
		proxy.FailAll(true, testenv.FaultUnavailable)
		bucket := strings.TrimPrefix(r.loc, "s3:http://"+fx.s3.Endpoint+"/")
		for i, kv := range r.env {
			if strings.HasPrefix(kv, "RESTIC_REPOSITORY=") {
				r.env[i] = "RESTIC_REPOSITORY=" + proxy.URL(bucket)
			}
		}
		d := r.startDaemon(t, "--schedule", "0 3 1 1 *")
		healthWithin(t, d, r.metricsAddr, 10*time.Second, "503 naming the storage's answer", func(h e2eHealth) bool {
			return reason(h, "repository:") && reason(h, "503")
		})
		proxy.FailAll(false)
		fixed := time.Now()
		healthWithin(t, d, r.metricsAddr, 90*time.Second, "200 once storage answers", func(h e2eHealth) bool { return h.status == 200 })
		t.Logf("healthy %s after storage came back (the open's own retry waits up to 30s)", time.Since(fixed).Round(time.Millisecond))
		logs := e2eLog(t, d.stderr.Bytes())
		// Open loads the config while it lists the key files: both retry.
		if n := e2eCount(logs, "storage retry", map[string]any{"op": "load", "object": "config"}); n == 0 {
			t.Errorf("no storage retry of the config's load in the daemon's log")
		}
		d.stop(t)
	})

	t.Run("no-docker", func(t *testing.T) {
		r := newRepo(t, "nodocker")
		sock := filepath.Join(t.TempDir(), "docker.sock")
		for i, kv := range r.env {
			if strings.HasPrefix(kv, "DOCKER_HOST=") {
				r.env[i] = "DOCKER_HOST=unix://" + sock
			}
		}
		d := r.startDaemon(t, "--schedule", "0 3 1 1 *")
		healthWithin(t, d, r.metricsAddr, 10*time.Second, "503 naming the Docker engine", func(h e2eHealth) bool {
			return reason(h, "docker:") && !reason(h, "repository:")
		})
		if err := os.Symlink(strings.TrimPrefix(fx.d.Host(), "unix://"), sock); err != nil {
			t.Fatal(err)
		}
		healthWithin(t, d, r.metricsAddr, 15*time.Second, "200 once the socket is there", func(h e2eHealth) bool { return h.status == 200 })
		d.stop(t)
	})
}

// ---------------------------------------------------------------------------
// 3. A healthy daemon's restart.

func monRestart(t *testing.T, fx *e2eFixture) {
	fx.postgres(t, monRst, 100)
	r := fx.newRepo(t, "restart", true)
	r.env = append(r.env, "SCALR_BACKUP_PATTERNS="+monRst, "SCALR_BACKUP_CHECK_INTERVAL=1h")
	r.mustRun(t, "run")
	r.mustRun(t, "run")
	// And a container this host backed up long ago (a second series).
	e2eBackupAt(t, r.open(t), "scalr-monold-db", time.Now().Add(-time.Hour).Truncate(time.Millisecond))
	// restic 0.18.1 says which backups are the newest.
	want := map[string]time.Time{}
	for _, s := range e2eDecodeSnaps(t, "restic snapshots", r.resticCLI().MustRun(t, r.loc, "", nil, "snapshots", "--json", "--host", e2eHost).Stdout) {
		name := strings.TrimPrefix(s.Paths[0], "/")
		if s.Time.After(want[name]) {
			want[name] = s.Time
		}
	}
	if len(want) != 2 {
		t.Fatalf("newest backups %v", want)
	}
	for round := 1; round <= 2; round++ {
		start := time.Now()
		d := r.startDaemon(t, "--schedule", "0 3 1 1 *")
		var m e2eMetrics
		e2eWaitFor(t, d, 20*time.Second, "the repository check", func() bool {
			var err error
			m, err = e2eScrape(r.metricsAddr)
			if err != nil {
				return false
			}
			_, ok := m.of("scalr_backup_last_success_timestamp_seconds", monRst)
			return ok
		})
		t.Logf("round %d: last-success metrics %s after start", round, time.Since(start).Round(time.Millisecond))
		for name, tm := range want {
			got := m.must(t, "scalr_backup_last_success_timestamp_seconds", name)
			if diff := got - float64(tm.UnixNano())/1e9; diff > 0.001 || diff < -0.001 {
				t.Errorf("round %d: %s last success %f, restic's newest snapshot %s", round, name, got, tm.Format(time.RFC3339Nano))
			}
		}
		for _, absent := range []string{"scalr_backup_last_pass_success", "scalr_backup_last_pass_timestamp_seconds", "scalr_backup_last_pass_duration_seconds"} {
			if _, ok := m.of(absent, ""); ok {
				t.Errorf("round %d: %s is there before any pass of this daemon", round, absent)
			}
		}
		if v := m.must(t, "scalr_backup_passes_total", ""); v != 0 {
			t.Errorf("passes_total %v", v)
		}
		for _, present := range []string{"scalr_backup_next_pass_timestamp_seconds", "scalr_backup_pass_running", "process_start_time_seconds", "go_goroutines"} {
			if _, ok := m.of(present, ""); !ok {
				t.Errorf("%s missing", present)
			}
		}
		// Healthy once the Docker check has finished too (it runs beside
		// the repository's and may take longer on a loaded machine).
		e2eWaitFor(t, d, 20*time.Second, "/healthz 200", func() bool { return e2eHealthz(t, r.metricsAddr).status == 200 })
		d.stop(t)
	}
}

// ---------------------------------------------------------------------------
// 4. Storage down: retries are shown as they happen.

// monStream runs the binary with stdout collected and stderr read line by
// line as it comes; it returns when the process exits, with each stderr
// line's arrival time.
type monLine struct {
	at   time.Duration
	text string
}

func monStream(t *testing.T, r *e2eRepo, args ...string) (e2eResult, []monLine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.fx.bin, args...)
	cmd.Env = r.env
	var stdout testenv.LockedBuffer
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []monLine
	var all strings.Builder
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		lines = append(lines, monLine{time.Since(start), sc.Text()})
		all.WriteString(sc.Text() + "\n")
	}
	err = cmd.Wait()
	res := e2eResult{args: args, stdout: stdout.Bytes(), stderr: []byte(all.String()), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return res, lines
}

func monRetries(t *testing.T, fx *e2eFixture) {
	r := fx.newRepo(t, "retries", true)
	proxy := testenv.StartFaultProxy(t, fx.s3.Endpoint, 12)
	bucket := strings.TrimPrefix(r.loc, "s3:http://"+fx.s3.Endpoint+"/")
	for i, kv := range r.env {
		if strings.HasPrefix(kv, "RESTIC_REPOSITORY=") {
			r.env[i] = "RESTIC_REPOSITORY=" + proxy.URL(bucket)
		}
	}
	// A budget of 12 s per operation keeps the test short; the waits are
	// the defaults (500ms doubling).
	r.env = append(r.env, "SCALR_BACKUP_PATTERNS="+monOK, "SCALR_BACKUP_RETRY_MAX_ELAPSED=12s")
	proxy.FailAll(true, testenv.FaultUnavailable, testenv.FaultInternalError)
	defer proxy.FailAll(false)

	first := func(lines []monLine, want string) (monLine, int) {
		var f monLine
		n := 0
		for _, l := range lines {
			if strings.Contains(l.text, want) {
				if n == 0 {
					f = l
				}
				n++
			}
		}
		return f, n
	}

	res, lines := monStream(t, r, "snapshots")
	l, n := first(lines, "storage retry: ")
	t.Logf("snapshots: exit %d after %s, %d retry lines, the first after %s: %s", res.code, res.took.Round(time.Millisecond), n, l.at.Round(time.Millisecond), l.text)
	if res.code == 0 || n == 0 || l.at > 5*time.Second {
		t.Errorf("snapshots with storage down: exit %d, %d retry lines, first at %s; want one within 5s\n%s", res.code, n, l.at, res)
	}
	// Open's first two requests go out together, so either may be the
	// first to be retried.
	if !(strings.Contains(l.text, "load config failed (attempt 1)") || strings.Contains(l.text, "list keys/ failed (attempt 1)")) ||
		!strings.Contains(l.text, "retrying in") {
		t.Errorf("retry line %q: want the operation, object, attempt, error and delay", l.text)
	}
	if _, n := first(lines, "storage retry: load config failed (attempt 1)"); n != 1 {
		t.Errorf("snapshots: %d retry lines for the config's first attempt; want 1", n)
	}

	res, lines = monStream(t, r, "run", "--json")
	var retryLines []map[string]any
	var firstAt time.Duration = -1
	for _, ln := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(ln.text), &m) == nil && m["msg"] == "storage retry" {
			if firstAt < 0 {
				firstAt = ln.at
			}
			retryLines = append(retryLines, m)
		}
	}
	rep := monDecode(t, res)
	t.Logf("run: exit %d after %s, %d retry log lines (first after %s); the report says %.1fs, %d retries, %d HEAD",
		res.code, res.took.Round(time.Millisecond), len(retryLines), firstAt.Round(time.Millisecond), rep.Seconds, rep.Requests.Retries, rep.Requests.Stats)
	if res.code == 0 || len(retryLines) == 0 || firstAt < 0 || firstAt > 5*time.Second {
		t.Errorf("run with storage down: exit %d, first retry line at %s\n%s", res.code, firstAt, res)
	}
	for _, k := range []string{"op", "object", "attempt", "delay", "error"} {
		if len(retryLines) > 0 && retryLines[0][k] == nil {
			t.Errorf("retry log line without %s: %v", k, retryLines[0])
		}
	}
	if rep.Seconds < 0.9*res.took.Seconds()-0.5 || rep.Seconds > res.took.Seconds()+0.5 {
		t.Errorf("the failed pass reports %.1fs; it took %s", rep.Seconds, res.took)
	}
	// Every attempt is counted: the config's load and the key listing,
	// side by side, each ending in a failed attempt, or the listing
	// stopped in its pause once the load gave up.
	attempts := rep.Requests.Loads + rep.Requests.Lists + rep.Requests.Stats
	if rep.Requests.Retries != len(retryLines) || attempts < rep.Requests.Retries+1 || attempts > rep.Requests.Retries+2 || rep.Requests.Loads == 0 {
		t.Errorf("the failed pass reports %d retries and %d attempts (%d GET, %d LIST, %d HEAD); the log has %d retry lines",
			rep.Requests.Retries, attempts, rep.Requests.Loads, rep.Requests.Lists, rep.Requests.Stats, len(retryLines))
	}
	if len(rep.Errors) != 1 || rep.Errors[0].Stage != "open" {
		t.Errorf("errors %+v", rep.Errors)
	}

	// On a terminal (script(1) gives it one) the run logs text lines.
	if _, err := exec.LookPath("script"); err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		cmdline := fmt.Sprintf("%q run", r.fx.bin)
		cmd := exec.CommandContext(ctx, "script", "-qefc", cmdline, "/dev/null")
		cmd.Env = append(slices.Clone(r.env), "SCALR_BACKUP_LOG_FORMAT=auto")
		pipe, _ := cmd.StdoutPipe()
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var at time.Duration = -1
		var text string
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			if at < 0 && strings.Contains(sc.Text(), "storage retry") {
				at, text = time.Since(start), sc.Text()
			}
		}
		_ = cmd.Wait()
		t.Logf("on a terminal: first retry line after %s: %s", at.Round(time.Millisecond), strings.TrimSpace(text))
		if at < 0 || at > 5*time.Second || !(strings.Contains(text, "op=load") || strings.Contains(text, "op=list")) || !strings.Contains(text, "delay=") {
			t.Errorf("on a terminal: retry line %q at %s", text, at)
		}
	}
}

// ---------------------------------------------------------------------------
// 5. A drill of another host's backups while that host backs up again.

func monDrillConcurrent(t *testing.T, fx *e2eFixture) {
	fx.postgres(t, monDrA, 3000)
	b := fx.postgres(t, monDrB, 300)
	r := fx.newRepo(t, "drill", true)
	const other = "e2e-other-host"
	r.env = append(r.env, "SCALR_BACKUP_PATTERNS=scalr-mondr?-db", "SCALR_BACKUP_HOST="+other)
	r.mustRun(t, "run")

	// The drill runs on this machine as the other host, through a proxy
	// with latency (so it takes a while); the other host's new backup
	// goes to the storage directly.
	proxy := testenv.StartFaultProxy(t, fx.s3.Endpoint, 13)
	proxy.SetLatency(100 * time.Millisecond)
	bucket := strings.TrimPrefix(r.loc, "s3:http://"+fx.s3.Endpoint+"/")
	drillEnv := slices.Clone(r.env)
	for i, kv := range drillEnv {
		if strings.HasPrefix(kv, "RESTIC_REPOSITORY=") {
			drillEnv[i] = "RESTIC_REPOSITORY=" + proxy.URL(bucket)
		}
		if strings.HasPrefix(kv, "SCALR_BACKUP_HOST=") {
			drillEnv[i] = "SCALR_BACKUP_HOST=drilling-host"
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	drill := exec.CommandContext(ctx, r.fx.bin, "drill", "--json", "--host", other, monDrA, monDrB)
	drill.Env = drillEnv
	var dout, derr testenv.LockedBuffer
	drill.Stdout, drill.Stderr = &dout, &derr
	start := time.Now()
	if err := drill.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- drill.Wait() }()
	drillOf := func(name string) bool {
		return strings.TrimSpace(fx.d.CLI(t, "ps", "--all", "--quiet", "--filter", "label=scalr.backup.drill-of="+name)) != ""
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !drillOf(monDrA) {
		select {
		case err := <-done:
			t.Fatalf("the drill ended before its throwaway container of %s was seen: %v\n%s", monDrA, err, derr.Bytes())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no throwaway container of the drill")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("drilling %s after %s (its index is loaded); now the other host backs up %s", monDrA, time.Since(start).Round(time.Millisecond), monDrB)
	b.Psql(t, "", "INSERT INTO items SELECT i, 'new ' || i FROM generate_series(100001, 100500) i;")
	bk := r.mustRun(t, "pg-backup", "--json", monDrB)
	var backed []struct {
		SnapshotID string `json:"snapshot_id"`
	}
	if err := json.Unmarshal(bk.stdout, &backed); err != nil || len(backed) != 1 || len(backed[0].SnapshotID) != 64 {
		t.Fatalf("pg-backup --json: %v %s", err, bk.stdout)
	}
	newID := backed[0].SnapshotID
	if !drillOf(monDrA) {
		t.Fatalf("inconclusive: the drill of %s ended before the other host's backup did (%s); make the drill slower", monDrA, bk.took)
	}
	t.Logf("the other host's backup of %s (%.8s) finished in %s while the drill of %s still ran", monDrB, newID, bk.took.Round(time.Millisecond), monDrA)
	var err error
	select {
	case err = <-done:
	case <-time.After(4 * time.Minute):
		t.Fatal("the drill did not finish")
	}
	t.Logf("drill finished after %s: %v", time.Since(start).Round(time.Millisecond), err)
	var results []struct {
		Container string `json:"container"`
		Snapshot  string `json:"snapshot"`
		Passed    bool   `json:"passed"`
		Error     string `json:"error"`
	}
	if jerr := json.Unmarshal(dout.Bytes(), &results); jerr != nil {
		t.Fatalf("drill --json: %v\n%s\nstderr:\n%s", jerr, dout.Bytes(), derr.Bytes())
	}
	if err != nil || len(results) != 2 {
		t.Errorf("drill: %v %+v\nstderr:\n%s", err, results, derr.Bytes())
	}
	for _, res := range results {
		if !res.Passed {
			t.Errorf("drill of %s failed: %s", res.Container, res.Error)
		}
		if res.Container == monDrB && res.Snapshot != newID {
			t.Errorf("the drill of %s restored %.8s, not the other host's new backup %.8s", monDrB, res.Snapshot, newID)
		}
	}
}
