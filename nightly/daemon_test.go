package nightly

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

// startDaemon runs d in the background; stop cancels it and waits for Run
// to return (failing the test when it takes too long).
func startDaemon(t *testing.T, d *Daemon) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var stopped bool
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("the daemon did not stop within 30s")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitReport[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("no %s within 20s", what)
		var zero T
		return zero
	}
}

func getURL(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDaemonRunsPassesOnSchedule: a pass every second; the first one fails
// for one container, the daemon goes on, later passes succeed; metrics and
// health are served; a stop leaves no lock.
func TestDaemonRunsPassesOnSchedule(t *testing.T) {
	tr := newTestRepo(t)
	hookLog, hookCmd := hookFile(t)
	fb := &fakeBackup{host: "h", fail: func(name string, call int) error {
		if name == "b" && call < 2 {
			return errDumpFailed
		}
		return nil
	}}
	cfg := Config{Host: "h", Schedule: "@every 1s", MetricsAddr: "127.0.0.1:0", OnFailure: hookCmd, StaleAfter: time.Hour}
	m := NewMetrics(cfg.StaleAfter, nil)
	reports := make(chan *Report, 16)
	addr := make(chan net.Addr, 1)
	d := &Daemon{
		Service:   &Service{Config: cfg, Open: tr.open, Discoverer: staticDiscoverer("a", "b"), Backup: fb.fn, Metrics: m, Logger: testLogger(t)},
		AfterPass: func(r *Report) { reports <- r },
		Listening: func(a net.Addr) { addr <- a },
	}
	stop := startDaemon(t, d)
	base := "http://" + waitReport(t, addr, "listener").String()

	first := waitReport(t, reports, "first pass")
	if first.OK() || first.Targets[1].Status != StatusFailed {
		t.Fatalf("first pass: %+v", first.Targets)
	}
	if code, body := getURL(t, base+"/healthz"); code != 503 || !strings.Contains(body, `"last_pass":"failed"`) {
		t.Errorf("healthz after the failed pass: %d %s", code, body)
	}
	second := waitReport(t, reports, "second pass")
	if !second.OK() {
		t.Fatalf("second pass: %v", second.Err())
	}
	third := waitReport(t, reports, "third pass")
	if !third.OK() || !third.Started.After(second.Started) {
		t.Fatalf("third pass: %v", third.Err())
	}
	code, body := getURL(t, base+"/healthz")
	var h Health
	_ = json.Unmarshal([]byte(body), &h)
	if code != 200 || !h.OK || h.LastPass != "ok" {
		t.Errorf("healthz after good passes: %d %s", code, body)
	}
	code, body = getURL(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "scalr_backup_pass_failures_total 1") || !strings.Contains(body, `scalr_backup_last_backup_success{container="b"} 1`) {
		t.Errorf("metrics: %d\n%s", code, body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if l := tr.locks(t); len(l) != 0 {
		t.Errorf("locks left: %v", l)
	}
	if lines := readLines(t, hookLog); len(lines) == 0 || !strings.HasPrefix(lines[0], "failure|b|h|") {
		t.Errorf("hook: %q", lines)
	}
	// The metrics server is gone with the daemon.
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("metrics still served after Run returned")
	}
}

// TestDaemonCancelMidPass: a pass hangs in a backup; passes that come due
// meanwhile are skipped, not stacked; a stop abandons the pass cleanly: no
// lock, no snapshot for the hung container, no failure alert.
func TestDaemonCancelMidPass(t *testing.T) {
	tr := newTestRepo(t)
	hookLog, hookCmd := hookFile(t)
	started := make(chan string, 1)
	fb := &fakeBackup{host: "h", size: 1 << 20, started: started, block: func(name string, call int) bool { return name == "b" && call >= 2 }}
	reports := make(chan *Report, 16)
	d := &Daemon{
		Service: &Service{Config: Config{Host: "h", Schedule: "* * * * * *", OnFailure: hookCmd}, Open: tr.open,
			Discoverer: staticDiscoverer("a", "b"), Backup: fb.fn, Metrics: NewMetrics(0, nil), Logger: testLogger(t)},
		AfterPass: func(r *Report) { reports <- r },
		NoRefresh: true,
	}
	stop := startDaemon(t, d)
	if rep := waitReport(t, reports, "first pass"); !rep.OK() {
		t.Fatal(rep.Err())
	}
	waitReport(t, started, "hanging backup")
	if l := tr.locks(t); len(l) != 1 {
		t.Fatalf("locks while backing up: %d", len(l))
	}
	time.Sleep(2500 * time.Millisecond) // two or three schedule ticks
	if d.Skipped() < 1 {
		t.Errorf("skipped %d passes while one was running", d.Skipped())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	rep := waitReport(t, reports, "cancelled pass")
	if !rep.Cancelled || rep.Targets[1].Status != StatusFailed || !errors.Is(rep.Targets[1].Err, context.Canceled) {
		t.Errorf("cancelled pass: %+v", rep.Targets)
	}
	if l := tr.locks(t); len(l) != 0 {
		t.Errorf("locks left after stopping mid-pass: %v", l)
	}
	for _, sn := range tr.snapshots(t) {
		if name, _ := ContainerOf(sn); name == "b" && sn.Time.After(rep.Started) {
			t.Error("the abandoned backup wrote a snapshot")
		}
	}
	if lines := readLines(t, hookLog); len(lines) != 0 {
		t.Errorf("a stop raised alerts: %q", lines)
	}
	if n := fb.callCount(); n != 4 {
		t.Errorf("%d backups, want 4 (two passes, the second stopped in b)", n)
	}
}

// TestDaemonShutdownGrace: a pass running when the stop comes may finish
// within the grace.
func TestDaemonShutdownGrace(t *testing.T) {
	tr := newTestRepo(t)
	started := make(chan string, 1)
	gate := make(chan struct{})
	fb := &fakeBackup{host: "h", started: started, gate: gate, block: func(name string, _ int) bool { return name == "a" }}
	reports := make(chan *Report, 4)
	d := &Daemon{
		Service: &Service{Config: Config{Host: "h", Schedule: "0 3 * * *"}, Open: tr.open,
			Discoverer: staticDiscoverer("a"), Backup: fb.fn, Logger: testLogger(t)},
		AfterPass: func(r *Report) { reports <- r }, RunNow: true, ShutdownGrace: 20 * time.Second, NoRefresh: true,
	}
	stop := startDaemon(t, d)
	waitReport(t, started, "backup")
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-stopped:
		t.Fatal("Run returned while the pass was still within its grace")
	default:
	}
	close(gate)
	if err := waitReport(t, stopped, "stop"); err != nil {
		t.Fatal(err)
	}
	rep := waitReport(t, reports, "pass")
	if !rep.OK() || rep.Cancelled {
		t.Errorf("the pass did not finish: %v", rep.Err())
	}
	if l := tr.locks(t); len(l) != 0 {
		t.Errorf("locks left: %v", l)
	}
}

func TestDaemonDrills(t *testing.T) {
	tr := newTestRepo(t)
	hookLog, hookCmd := hookFile(t)
	m := NewMetrics(0, nil)
	drills := make(chan *DrillReport, 8)
	drill := func(ctx context.Context, r *repo.Repository, tg Target) (DrillResult, error) {
		if tg.Detail != "detail-"+tg.Name {
			return DrillResult{}, errors.New("detail lost")
		}
		if tg.Name == "b" {
			return DrillResult{Snapshot: "1234abcd"}, errors.New("restored row counts differ: public.users 10 != 9")
		}
		return DrillResult{Snapshot: "cafe0000"}, nil
	}
	d := &Daemon{
		Service: &Service{Config: Config{Host: "h", Schedule: "0 3 * * *", DrillSchedule: "@every 1s", OnFailure: hookCmd}, Open: tr.open,
			Discoverer: staticDiscoverer("a", "b"), Backup: (&fakeBackup{}).fn, Drill: drill, Metrics: m, Logger: testLogger(t)},
		AfterDrill: func(r *DrillReport) { drills <- r }, NoRefresh: true,
	}
	stop := startDaemon(t, d)
	rep := waitReport(t, drills, "drill")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Targets) != 2 || !rep.Targets[0].Passed || rep.Targets[1].Passed || rep.Targets[1].Snapshot != "1234abcd" {
		t.Errorf("drill report %+v", rep.Targets)
	}
	out := scrape(t, m)
	if !strings.Contains(out, `scalr_backup_last_drill_success{container="a"} 1`) || !strings.Contains(out, `scalr_backup_last_drill_success{container="b"} 0`) {
		t.Errorf("metrics:\n%s", out)
	}
	lines := readLines(t, hookLog)
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "drill-failure|b|h|restored row counts differ") {
		t.Errorf("hook %q", lines)
	}
}

func TestDaemonStartErrors(t *testing.T) {
	tr := newTestRepo(t)
	s := &Service{Config: Config{Host: "h"}, Open: tr.open, Discoverer: staticDiscoverer("a"), Backup: (&fakeBackup{}).fn}
	d := &Daemon{Service: s, Schedule: "every night"}
	if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), `schedule "every night"`) {
		t.Errorf("bad schedule: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s2 := &Service{Config: Config{Host: "h", MetricsAddr: ln.Addr().String()}, Open: tr.open, Discoverer: staticDiscoverer("a"),
		Backup: (&fakeBackup{}).fn, Metrics: NewMetrics(0, nil)}
	d = &Daemon{Service: s2, NoRefresh: true}
	if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "metrics address") {
		t.Errorf("address in use: %v", err)
	}
}
