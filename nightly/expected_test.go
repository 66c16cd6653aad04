package nightly

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/repo"
)

// TestPassNamesMissingAndProblemContainers: a container this host backed up
// that discovery no longer lists is a failed, missing row (its own event
// stage), a listed one with a problem fails through BackupFunc, and a
// retired one is neither; the others are backed up.
func TestPassNamesMissingAndProblemContainers(t *testing.T) {
	tr := newTestRepo(t)
	ctx := context.Background()
	t0 := time.Now().Add(-2 * time.Hour).UTC()
	old := &fakeBackup{host: "h", now: func() time.Time { return t0 }}
	for _, n := range []string{"a", "gone", "retired-gone", "stopped", "retired-stopped"} {
		if _, err := old.fn(ctx, tr.r, Target{Name: n, Detail: "detail-" + n}); err != nil {
			t.Fatal(err)
		}
	}
	// Another host's container is none of this host's business.
	other := &fakeBackup{host: "other", now: func() time.Time { return t0 }}
	if _, err := other.fn(ctx, tr.r, Target{Name: "elsewhere", Detail: "detail-elsewhere"}); err != nil {
		t.Fatal(err)
	}
	saveRetiredRecord(t, tr.r, "retired-gone", t0.Add(time.Hour), "h")
	saveRetiredRecord(t, tr.r, "retired-stopped", t0.Add(time.Hour), "h")

	fb := &fakeBackup{host: "h", fail: func(name string, _ int) error {
		if strings.HasSuffix(name, "stopped") {
			return errors.New("container " + name + " cannot be backed up: container is exited, not running")
		}
		return nil
	}}
	disc := DiscoverFunc(func(context.Context) ([]Target, error) {
		ts := targets("a", "new", "stopped", "retired-stopped")
		ts[2].Problem = "container is exited, not running"
		ts[3].Problem = "container is exited, not running"
		return ts, nil
	})
	hookLog, hookCmd := hookFile(t)
	m := NewMetrics(26*time.Hour, nil)
	s := &Service{Config: Config{Host: "h", OnFailure: hookCmd}, Open: tr.open, Discoverer: disc, Backup: fb.fn, Metrics: m, Logger: testLogger(t)}
	rep := s.RunPass(ctx)
	got := map[string]TargetReport{}
	for _, tr := range rep.Targets {
		got[tr.Name] = tr
	}
	if len(got) != 5 || got["a"].Status != StatusOK || got["new"].Status != StatusOK ||
		got["stopped"].Status != StatusFailed || got["retired-stopped"].Status != StatusRetired ||
		got["gone"].Status != StatusFailed || !got["gone"].Missing || got["stopped"].Missing {
		t.Fatalf("targets %+v", rep.Targets)
	}
	if !errors.Is(got["gone"].Err, ErrMissing) || !strings.Contains(got["gone"].Error, "scalr-backup retire gone") {
		t.Errorf("missing row: %s", got["gone"].Error)
	}
	if rep.OK() || !strings.Contains(rep.Err().Error(), "2 of 5 container backups failed: stopped, gone") {
		t.Errorf("pass: %v", rep.Err())
	}
	if calls := strings.Join(fb.calls, ","); calls != "a,new,stopped" {
		t.Errorf("backups tried: %s (a retired container with a problem is left alone)", calls)
	}
	hooks := readLines(t, hookLog)
	if len(hooks) != 2 || !strings.HasPrefix(hooks[0], "failure|stopped|h|container stopped cannot be backed up") ||
		!strings.HasPrefix(hooks[1], "failure|gone|h|missing: container gone was backed up by this host") {
		t.Errorf("hook lines %q", hooks)
	}
	if m.Health().OK {
		t.Error("healthy after a pass that missed a container")
	}
	out := scrape(t, m)
	for _, want := range []string{`scalr_backup_last_backup_success{container="gone"} 0`, `scalr_backup_backup_failures_total{container="gone"} 1`,
		`scalr_backup_stale{container="gone"} 0`} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(out, `scalr_backup_stale{container="retired-gone"}`) || strings.Contains(out, `scalr_backup_stale{container="elsewhere"}`) {
		t.Errorf("a retired or another host's container is expected:\n%s", out)
	}
}

// TestStaleReminder: one alert when a container becomes stale, a reminder
// every StaleReminder while it stays stale, none when that is 0, and a new
// alert after it recovered and went stale again.
func TestStaleReminder(t *testing.T) {
	for _, reminder := range []time.Duration{6 * time.Hour, 0} {
		tr := newTestRepo(t)
		ctx := context.Background()
		clk := newClock(time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC))
		fb := &fakeBackup{host: "h", now: clk.Now}
		if _, err := fb.fn(ctx, tr.r, Target{Name: "a", Detail: "detail-a"}); err != nil {
			t.Fatal(err)
		}
		hookLog, _ := hookFile(t)
		s := &Service{Config: Config{Host: "h", StaleAfter: 26 * time.Hour, StaleReminder: reminder}, Open: tr.open,
			Discoverer: staticDiscoverer(), Now: clk.Now, Logger: testLogger(t),
			Alerter: &Alerter{Host: "h", Now: clk.Now, OnFailure: `printf '%s|%s|%s\n' "$SCALR_BACKUP_EVENT" "$SCALR_BACKUP_CONTAINER" "$SCALR_BACKUP_REMINDER" >> ` + hookLog}}
		if err := s.Check(ctx); err != nil {
			t.Fatal(err)
		}
		var want []string
		step := func(d time.Duration, add ...string) {
			t.Helper()
			clk.Add(d)
			s.CheckStale(ctx)
			want = append(want, add...)
			if got := readLines(t, hookLog); strings.Join(got, ";") != strings.Join(want, ";") {
				t.Errorf("reminder %s, at %s: hooks %q, want %q", reminder, clk.Now().Format(time.RFC3339), got, want)
			}
		}
		step(25 * time.Hour)
		step(2*time.Hour, "stale|a|false")
		step(time.Hour)
		if reminder > 0 {
			step(5*time.Hour, "stale|a|true")
			step(6*time.Hour, "stale|a|true")
		} else {
			step(11 * time.Hour)
		}
		// Backed up again: fresh; stale later: alerted anew.
		if _, err := fb.fn(ctx, tr.r, Target{Name: "a", Detail: "detail-a"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Check(ctx); err != nil {
			t.Fatal(err)
		}
		step(time.Hour)
		step(26*time.Hour, "stale|a|false")
	}
}

// TestHealthChecksAndAbsentPassMetrics: before any check the components are
// "not checked yet" (503), a storage retry shows up as what is going on, a
// failed check says why, a working one clears it; no pass gauge exists
// before a pass.
func TestHealthChecksAndAbsentPassMetrics(t *testing.T) {
	m := NewMetrics(time.Hour, nil)
	m.SetBuildInfo("1.2.3", "abc")
	m.ExpectChecks(CheckRepository, CheckDocker)
	code, h := healthz(t, m)
	if code != 503 || len(h.Reasons) != 2 || !strings.Contains(h.Reasons[1], "repository: not checked yet") {
		t.Errorf("before the checks: %d %+v", code, h)
	}
	m.NoteRetry(backend.RetryEvent{Op: "stat", Handle: backend.Handle{Type: backend.ConfigFile}, Attempt: 2, Delay: time.Second, Err: errors.New("dial tcp: connection refused")})
	if _, h := healthz(t, m); !strings.Contains(strings.Join(h.Reasons, "\n"), "repository: not checked yet (check in progress); storage retrying: stat config failed (attempt 2): dial tcp: connection refused; retrying in 1s") {
		t.Errorf("retry not shown: %+v", h.Reasons)
	}
	m.ObserveCheck(CheckRepository, repo.ErrWrongPassword, time.Now())
	m.ObserveCheck(CheckDocker, nil, time.Now())
	if code, h := healthz(t, m); code != 503 || len(h.Reasons) != 1 || h.Reasons[0] != "repository: "+repo.ErrWrongPassword.Error() || !h.Checks[CheckDocker].OK {
		t.Errorf("wrong password: %d %+v", code, h)
	}
	out := scrape(t, m)
	for _, want := range []string{`scalr_backup_check_success{component="repository"} 0`, `scalr_backup_check_success{component="docker"} 1`,
		`scalr_backup_build_info{goversion="go`, `revision="abc",version="1.2.3"} 1`, "scalr_backup_pass_running 0", "scalr_backup_passes_total 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, absent := range []string{"scalr_backup_last_pass_success", "scalr_backup_last_pass_timestamp_seconds", "scalr_backup_last_pass_duration_seconds",
		"scalr_backup_repository_size_bytes", "scalr_backup_next_pass_timestamp_seconds", "go_goroutines"} {
		if strings.Contains(out, absent+" ") || strings.Contains(out, absent+"{") {
			t.Errorf("%s is there before it has a value", absent)
		}
	}
	m.ObserveCheck(CheckRepository, nil, time.Now())
	if code, h := healthz(t, m); code != 200 || len(h.Reasons) != 0 {
		t.Errorf("fixed: %d %+v", code, h)
	}
	m.RegisterProcess()
	if out := scrape(t, m); !strings.Contains(out, "go_goroutines") || !strings.Contains(out, "process_start_time_seconds") {
		t.Error("no Go or process collector")
	}
}

// TestTextfileCountersCumulative: each run is a new process, yet the
// textfile's counters go on from the previous file.
func TestTextfileCountersCumulative(t *testing.T) {
	p := filepath.Join(t.TempDir(), "scalr_backup.prom")
	for run := 1; run <= 3; run++ {
		m := NewMetrics(0, nil)
		if err := m.LoadTextfile(p); err != nil {
			t.Fatal(err)
		}
		m.ObservePass(&Report{Host: "h", Finished: time.Now(), Targets: []TargetReport{{Name: "a", Status: StatusFailed, Error: "x"}},
			Requests: backend.Counts{Saves: 3, SaveErrors: 1, Retries: 1, BytesUp: 10}})
		if err := m.WriteTextfile(p); err != nil {
			t.Fatal(err)
		}
	}
	buf, _ := os.ReadFile(p)
	out := string(buf)
	for _, want := range []string{"scalr_backup_passes_total 3", "scalr_backup_pass_failures_total 3", `scalr_backup_backup_failures_total{container="a"} 3`,
		`scalr_backup_storage_requests_total{op="save",outcome="ok"} 6`, `scalr_backup_storage_requests_total{op="save",outcome="error"} 3`,
		"scalr_backup_storage_retries_total 3", `scalr_backup_storage_bytes_total{direction="up"} 30`, "scalr_backup_last_pass_success 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("textfile lacks %q:\n%s", want, out)
		}
	}
	// A file of an older version (op label only) is not carried over,
	// and says so; one that does not parse neither.
	old := "# TYPE scalr_backup_storage_requests_total counter\nscalr_backup_storage_requests_total{op=\"save\"} 5\n# TYPE scalr_backup_passes_total counter\nscalr_backup_passes_total 7\n"
	if err := os.WriteFile(p, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(0, nil)
	if err := m.LoadTextfile(p); err == nil || !strings.Contains(err.Error(), "scalr_backup_storage_requests_total") {
		t.Errorf("old labels: %v", err)
	}
	if out := scrape(t, m); !strings.Contains(out, "scalr_backup_passes_total 7") {
		t.Error("passes_total not carried over from the older file")
	}
	if err := os.WriteFile(p, []byte("garbage {{{\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := NewMetrics(0, nil).LoadTextfile(p); err == nil {
		t.Error("garbage read without error")
	}
	if err := NewMetrics(0, nil).LoadTextfile(filepath.Join(t.TempDir(), "none.prom")); err != nil {
		t.Errorf("no previous file: %v", err)
	}
}

// TestFailedOpenReportsTimeAndRequests: an open that fails after retrying
// reports how long it took and the requests it made.
func TestFailedOpenReportsTimeAndRequests(t *testing.T) {
	m := NewMetrics(0, nil)
	s := &Service{Config: Config{Host: "h"}, Metrics: m, Logger: testLogger(t), Discoverer: staticDiscoverer("a"),
		Open: func(ctx context.Context) (*repo.Repository, error) {
			time.Sleep(150 * time.Millisecond)
			return nil, WithRequests(errors.New("stat config failed after 3 attempts: HTTP 503"), backend.Counts{Stats: 3, StatErrors: 3, Errors: 3, Retries: 2})
		}}
	rep := s.RunPass(context.Background())
	if rep.Duration < 150*time.Millisecond || rep.Requests.Retries != 2 || rep.Requests.Stats != 3 {
		t.Errorf("duration %s, requests %+v", rep.Duration, rep.Requests)
	}
	out := scrape(t, m)
	for _, want := range []string{`scalr_backup_storage_requests_total{op="stat",outcome="error"} 3`, "scalr_backup_storage_retries_total 2",
		`scalr_backup_check_success{component="repository"} 0`, "scalr_backup_last_pass_success 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestDaemonStartupChecks: until the repository opens and discovery works,
// /healthz is 503 with the reason; the check is retried with backoff and,
// once both work, /healthz is 200 and the metrics hold the history.
func TestDaemonStartupChecks(t *testing.T) {
	tr := newTestRepo(t)
	ctx := context.Background()
	when := time.Now().Add(-time.Hour).Truncate(time.Second)
	fb := &fakeBackup{host: "h", now: func() time.Time { return when }}
	if _, err := fb.fn(ctx, tr.r, Target{Name: "a", Detail: "detail-a"}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	password, dockerErr := "wrong", errors.New("Cannot connect to the Docker daemon")
	open := func(ctx context.Context) (*repo.Repository, error) {
		mu.Lock()
		pw := password
		mu.Unlock()
		return repo.Open(ctx, backend.NewCounting(tr.be), pw, repo.Options{})
	}
	disc := DiscoverFunc(func(context.Context) ([]Target, error) {
		mu.Lock()
		defer mu.Unlock()
		if dockerErr != nil {
			return nil, dockerErr
		}
		return targets("a"), nil
	})
	cfg := Config{Host: "h", Schedule: "0 3 1 1 *", MetricsAddr: "127.0.0.1:0", StaleAfter: 26 * time.Hour}
	m := NewMetrics(cfg.StaleAfter, nil)
	addr := make(chan net.Addr, 1)
	d := &Daemon{Service: &Service{Config: cfg, Open: open, Discoverer: disc, Backup: fb.fn, Metrics: m, Logger: testLogger(t)},
		Listening: func(a net.Addr) { addr <- a }, StaleCheckEvery: 2 * time.Second}
	start := time.Now()
	startDaemon(t, d)
	base := "http://" + waitReport(t, addr, "listener").String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := getURL(t, base+"/healthz")
		if code == 503 && strings.Contains(body, "repository: "+repo.ErrWrongPassword.Error()) && strings.Contains(body, "docker: Cannot connect") {
			t.Logf("503 with both reasons %s after start", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 503 naming both reasons within 10s: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := scrape(t, m); strings.Contains(out, "scalr_backup_last_success_timestamp_seconds") || !strings.Contains(out, "scalr_backup_next_pass_timestamp_seconds") {
		t.Errorf("before the repository opens:\n%s", out)
	}
	mu.Lock()
	password = testPassword
	mu.Unlock()
	for {
		code, body := getURL(t, base+"/healthz")
		if code == 503 && !strings.Contains(body, "repository:") && strings.Contains(body, "docker:") {
			break
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("the fixed password is not seen: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v, ok := metricValue(t, scrape(t, m), "scalr_backup_last_success_timestamp_seconds", "a"); !ok || v != float64(when.Unix()) {
		t.Errorf("the history is not in the metrics once the repository opened: %v %v, want %d", v, ok, when.Unix())
	}
	mu.Lock()
	dockerErr = nil
	mu.Unlock()
	fixed := time.Now()
	for {
		code, body := getURL(t, base+"/healthz")
		if code == 200 {
			t.Logf("200 %s after the engine came back", time.Since(fixed).Round(time.Millisecond))
			break
		}
		if time.Since(fixed) > 20*time.Second {
			t.Fatalf("not healthy 20s after both were fixed: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricValue parses a scrape and returns the value of name (for the
// container, when not "").
func metricValue(t *testing.T, text, name, container string) (float64, bool) {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, mt := range f.Metric {
		match := container == ""
		for _, lp := range mt.Label {
			if lp.GetName() == "container" && lp.GetValue() == container {
				match = true
			}
		}
		if !match {
			continue
		}
		switch {
		case mt.Gauge != nil:
			return mt.Gauge.GetValue(), true
		case mt.Counter != nil:
			return mt.Counter.GetValue(), true
		}
	}
	return 0, false
}
