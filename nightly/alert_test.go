package nightly

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

// recorder is an HTTP endpoint that records requests and answers with
// the next scripted status (200 when the script is used up).
type recorder struct {
	mu     sync.Mutex
	reqs   []recorded
	script []int
	srv    *httptest.Server
}

type recorded struct {
	method, path, contentType string
	body                      []byte
}

func newRecorder(t *testing.T, script ...int) *recorder {
	rec := &recorder{script: script}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, recorded{r.Method, r.URL.Path, r.Header.Get("Content-Type"), body})
		status := 200
		if len(rec.script) > 0 {
			status, rec.script = rec.script[0], rec.script[1:]
		}
		rec.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (rec *recorder) requests() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.reqs...)
}

func TestWebhookRetriesAndBody(t *testing.T) {
	rec := newRecorder(t, 500, 503)
	a := &Alerter{Host: "h1", WebhookURL: rec.srv.URL + "/hook/SECRET-TOKEN", WebhookBackoff: 10 * time.Millisecond, Logger: testLogger(t)}
	last := time.Date(2026, 5, 1, 3, 0, 4, 0, time.UTC)
	ev := Event{Kind: EventFailure, Container: "scalr-a-db", Stage: "backup", Error: "pg_dump failed", Time: time.Date(2026, 5, 2, 3, 0, 9, 0, time.UTC), LastSuccess: &last}
	if err := a.Notify(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	reqs := rec.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d attempts, want 3 (two 5xx, then 200)", len(reqs))
	}
	for _, r := range reqs {
		if r.method != "POST" || r.path != "/hook/SECRET-TOKEN" || r.contentType != "application/json" {
			t.Errorf("request %s %s %s", r.method, r.path, r.contentType)
		}
	}
	var body map[string]any
	if err := json.Unmarshal(reqs[2].body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"event": "failure", "host": "h1", "container": "scalr-a-db", "stage": "backup", "error": "pg_dump failed",
		"time": "2026-05-02T03:00:09Z", "last_success": "2026-05-01T03:00:04Z",
	}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("body[%s] = %v, want %v", k, body[k], v)
		}
	}

	// A container never backed up: last_success is null.
	ev.LastSuccess = nil
	if err := a.Notify(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	reqs = rec.requests()
	if !strings.Contains(string(reqs[len(reqs)-1].body), `"last_success":null`) {
		t.Errorf("body %s", reqs[len(reqs)-1].body)
	}
}

func TestWebhookGivesUpWithoutLeakingURL(t *testing.T) {
	rec := newRecorder(t, 400)
	a := &Alerter{Host: "h1", WebhookURL: rec.srv.URL + "/hook/SECRET-TOKEN", WebhookBackoff: time.Millisecond}
	err := a.Notify(context.Background(), Event{Kind: EventFailure, Container: "c"})
	if err == nil || !strings.Contains(err.Error(), "HTTP 400") || len(rec.requests()) != 1 {
		t.Errorf("4xx: err %v after %d attempts (want no retry)", err, len(rec.requests()))
	}

	rec = newRecorder(t, 500, 500, 500, 500, 500)
	a.WebhookURL = rec.srv.URL + "/hook/SECRET-TOKEN"
	a.WebhookRetries = 2
	err = a.Notify(context.Background(), Event{Kind: EventFailure, Container: "c"})
	if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts: HTTP 500") || len(rec.requests()) != 3 {
		t.Errorf("5xx: err %v after %d attempts", err, len(rec.requests()))
	}

	// Nothing listens: the transport error must not repeat the URL.
	srv := httptest.NewServer(http.NotFoundHandler())
	dead := srv.URL
	srv.Close()
	a.WebhookURL = dead + "/hook/SECRET-TOKEN"
	a.WebhookRetries = -1
	err = a.Notify(context.Background(), Event{Kind: EventFailure, Container: "c"})
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("error %v", err)
	}
	if !strings.Contains(redactURL(a.WebhookURL), "/...") || strings.Contains(redactURL(a.WebhookURL), "SECRET") {
		t.Errorf("redacted %s", redactURL(a.WebhookURL))
	}

	// Success events go to the webhook only when asked.
	rec = newRecorder(t)
	a = &Alerter{Host: "h1", WebhookURL: rec.srv.URL}
	_ = a.Notify(context.Background(), Event{Kind: EventSuccess})
	if len(rec.requests()) != 0 {
		t.Error("success posted without WebhookOnSuccess")
	}
	a.WebhookOnSuccess = true
	_ = a.Notify(context.Background(), Event{Kind: EventSuccess})
	if len(rec.requests()) != 1 {
		t.Error("success not posted with WebhookOnSuccess")
	}
}

// TestServiceAlertsOnFailedContainer: one of three targets fails; the
// others get snapshots, the failure hook runs once naming the failed
// container (without the repository password in its environment), the
// webhook gets it, and the healthcheck gets /start then /fail.
func TestServiceAlertsOnFailedContainer(t *testing.T) {
	tr := newTestRepo(t)
	hookLog, hookCmd := hookFile(t)
	okLog, okCmd := hookFile(t)
	web := newRecorder(t)
	hc := newRecorder(t)
	clk := newClock(time.Date(2026, 5, 2, 3, 0, 0, 0, time.UTC))
	fb := &fakeBackup{host: "h1", now: clk.Now, fail: func(name string, _ int) error {
		if name == "scalr-b-db" {
			return errDumpFailed
		}
		return nil
	}}
	cfg := Config{Host: "h1", OnFailure: hookCmd, OnSuccess: okCmd, WebhookURL: web.srv.URL + "/w", HealthcheckURL: hc.srv.URL + "/ping/uuid", StaleAfter: 26 * time.Hour}
	s := &Service{Config: cfg, Open: tr.open, Discoverer: staticDiscoverer("scalr-a-db", "scalr-b-db", "scalr-c-db"),
		Backup: fb.fn, Now: clk.Now, Logger: testLogger(t), Metrics: NewMetrics(cfg.StaleAfter, clk.Now)}
	s.init()
	s.alerter.Environ = func() []string { return []string{"PATH=/usr/bin:/bin", "RESTIC_PASSWORD=hunter2"} }

	rep := s.RunPass(context.Background())
	if rep.OK() {
		t.Fatal("pass OK")
	}
	byName := map[string]int{}
	for _, sn := range tr.snapshots(t) {
		n, _ := ContainerOf(sn)
		byName[n]++
	}
	if byName["scalr-a-db"] != 1 || byName["scalr-c-db"] != 1 || byName["scalr-b-db"] != 0 {
		t.Errorf("snapshots %v", byName)
	}
	lines := readLines(t, hookLog)
	// The failure only: scalr-b-db has no backup at all, but it was first
	// seen just now, so the dead-man check gives it until the threshold.
	if len(lines) != 1 {
		t.Fatalf("failure hook ran %d times: %q", len(lines), lines)
	}
	if !strings.HasPrefix(lines[0], "failure|scalr-b-db|h1|") || !strings.Contains(lines[0], "connection refused") || !strings.HasSuffix(lines[0], "|nopw") {
		t.Errorf("hook line %q", lines[0])
	}
	if l := readLines(t, okLog); l != nil {
		t.Errorf("success hook ran: %q", l)
	}
	reqs := web.requests()
	if len(reqs) != 1 || !strings.Contains(string(reqs[0].body), `"container":"scalr-b-db"`) || !strings.Contains(string(reqs[0].body), `"last_success":null`) {
		t.Errorf("webhook: %d requests", len(reqs))
	}
	// A day and more later, still without a backup: stale.
	clk.Add(27 * time.Hour)
	if st := s.CheckStale(context.Background()); len(st) != 3 {
		t.Errorf("stale after 27h: %+v", st)
	}
	lines = readLines(t, hookLog)
	if len(lines) != 4 || !strings.HasPrefix(lines[2], "stale|scalr-b-db|h1|container scalr-b-db has no backup at all|") {
		t.Fatalf("stale lines %q", lines)
	}
	if len(web.requests()) != 4 {
		t.Errorf("webhook: %d requests", len(web.requests()))
	}
	pings := hc.requests()
	if len(pings) != 2 || pings[0].path != "/ping/uuid/start" || pings[1].path != "/ping/uuid/fail" {
		t.Fatalf("pings %+v", pings)
	}
	if !strings.Contains(string(pings[1].body), "scalr-b-db: failed") {
		t.Errorf("fail ping body %q", pings[1].body)
	}

	// Next night everything works: success hook, success ping; the stale
	// container is fresh again.
	clk.Add(24 * time.Hour)
	fb.fail = nil
	rep = s.RunPass(context.Background())
	if !rep.OK() {
		t.Fatal(rep.Err())
	}
	if l := readLines(t, hookLog); len(l) != 4 {
		t.Errorf("failure hook ran again: %q", l)
	}
	if l := readLines(t, okLog); len(l) != 1 || !strings.HasPrefix(l[0], "success||h1|") {
		t.Errorf("success hook: %q", l)
	}
	pings = hc.requests()
	if len(pings) != 4 || pings[2].path != "/ping/uuid/start" || pings[3].path != "/ping/uuid" {
		t.Errorf("pings %+v", pings)
	}
	if len(web.requests()) != 4 {
		t.Error("webhook got a success without WebhookOnSuccess")
	}
}

func TestServiceOpenFailure(t *testing.T) {
	hookLog, hookCmd := hookFile(t)
	s := &Service{Config: Config{Host: "h1", OnFailure: hookCmd}, Logger: testLogger(t),
		Open: func(ctx context.Context) (*repo.Repository, error) {
			return repo.Open(ctx, newTestRepo(t).be, "wrong", repo.Options{})
		}, Discoverer: staticDiscoverer("a"), Backup: (&fakeBackup{}).fn}
	rep := s.RunPass(context.Background())
	if rep.OK() || len(rep.Errors) != 1 || rep.Errors[0].Stage != "open" {
		t.Fatalf("report %+v", rep.Errors)
	}
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "open: ") {
		t.Errorf("Err %v", err)
	}
	lines := readLines(t, hookLog)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "failure||h1|") {
		t.Errorf("hook %q", lines)
	}
}

func TestHookTimeoutKillsCommand(t *testing.T) {
	a := &Alerter{OnFailure: "sleep 30; echo never", HookTimeout: 200 * time.Millisecond}
	start := time.Now()
	err := a.Notify(context.Background(), Event{Kind: EventFailure})
	if err == nil || time.Since(start) > 10*time.Second {
		t.Errorf("err %v after %s", err, time.Since(start))
	}
	a = &Alerter{OnFailure: "exit 3"}
	if err := a.Notify(context.Background(), Event{Kind: EventFailure}); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("exit status: %v", err)
	}
}

func TestCheckStale(t *testing.T) {
	tr := newTestRepo(t)
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC)
	for i, name := range []string{"fresh", "old"} {
		at := t0
		if name == "old" {
			at = t0.Add(-30 * time.Hour)
		}
		fb := &fakeBackup{now: func() time.Time { return at }, host: "h"}
		if _, err := fb.fn(ctx, tr.r, Target{Name: name, Detail: "detail-" + name}); err != nil {
			t.Fatal(i, err)
		}
		// An older backup, and a newer drill record, change nothing.
		fb.now = func() time.Time { return at.Add(-72 * time.Hour) }
		if _, err := fb.fn(ctx, tr.r, Target{Name: name, Detail: "detail-" + name}); err != nil {
			t.Fatal(err)
		}
		saveDrillRecord(t, tr.r, name, true, t0.Add(time.Hour), "h")
	}
	snaps := tr.snapshots(t)
	now := t0.Add(2 * time.Hour)
	alerts := CheckStale(snaps, targets("fresh", "old", "never"), now, 26*time.Hour)
	if len(alerts) != 2 {
		t.Fatalf("alerts %+v", alerts)
	}
	if alerts[0].Container != "never" || !alerts[0].Newest.IsZero() || alerts[0].String() != "container never has no backup at all" {
		t.Errorf("never: %+v %s", alerts[0], alerts[0])
	}
	if alerts[1].Container != "old" || alerts[1].Age != 32*time.Hour || !strings.Contains(alerts[1].String(), "is 32h0m0s old (from 2026-04-29T21:00:00Z)") {
		t.Errorf("old: %+v %s", alerts[1], alerts[1])
	}
	// 25 hours later the fresh one is stale too.
	if got := CheckStale(snaps, targets("fresh", "old"), now.Add(25*time.Hour), 26*time.Hour); len(got) != 2 || got[0].Container != "fresh" {
		t.Errorf("later: %+v", got)
	}
	// A container that is no target any more (stopped, removed, renamed)
	// stays expected: its backups are this host's.
	if got := CheckStale(snaps, targets("fresh"), now, 26*time.Hour); len(got) != 1 || got[0].Container != "old" {
		t.Errorf("old is no target: %+v", got)
	}
	// Retired: a retirement record newer than its newest backup takes it
	// out of the expected set; another host's record does not.
	saveRetiredRecord(t, tr.r, "old", t0.Add(-time.Hour), "other-host")
	onH := func() []*repo.Snapshot {
		var out []*repo.Snapshot
		for _, sn := range tr.snapshots(t) {
			if sn.Hostname == "h" {
				out = append(out, sn)
			}
		}
		return out
	}
	if got := CheckStale(onH(), targets("fresh"), now, 26*time.Hour); len(got) != 1 {
		t.Errorf("retired by another host: %+v", got)
	}
	saveRetiredRecord(t, tr.r, "old", t0.Add(-time.Hour), "h")
	if got := CheckStale(onH(), targets("fresh"), now, 26*time.Hour); len(got) != 0 {
		t.Errorf("retired: %+v", got)
	}
	// Retired even when discovered again, until a backup after the record.
	if got := CheckStale(onH(), targets("fresh", "old"), now, 26*time.Hour); len(got) != 0 {
		t.Errorf("retired, discovered: %+v", got)
	}
	fb := &fakeBackup{now: func() time.Time { return t0 }, host: "h"}
	if _, err := fb.fn(ctx, tr.r, Target{Name: "old", Detail: "detail-old"}); err != nil {
		t.Fatal(err)
	}
	if got := CheckStale(onH(), targets("fresh"), now.Add(25*time.Hour), 26*time.Hour); len(got) != 2 {
		t.Errorf("backed up after its retirement, it is expected again: %+v", got)
	}
}

// saveRetiredRecord writes a retirement record as `scalr-backup retire`
// does.
func saveRetiredRecord(t *testing.T, r *repo.Repository, name string, at time.Time, host string) {
	t.Helper()
	_, err := r.BackupStream(context.Background(), repo.Stream{
		Name: strings.TrimPrefix(RetiredRecordPath(name), "/"), Reader: strings.NewReader(`{"container":"` + name + `"}`),
	}, repo.BackupOptions{Tags: []string{RetiredTag, RetiredOfTag(name)}, Hostname: host, Time: at})
	if err != nil {
		t.Fatal(err)
	}
}

// TestServiceStaleAlertsOnce: the dead-man check alerts when a container
// becomes stale, not again on every check, and again after it recovered and
// went stale once more.
func TestServiceStaleAlertsOnce(t *testing.T) {
	tr := newTestRepo(t)
	hookLog, hookCmd := hookFile(t)
	clk := newClock(time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC))
	fb := &fakeBackup{host: "h", now: clk.Now}
	s := &Service{Config: Config{Host: "h", OnFailure: hookCmd, StaleAfter: 26 * time.Hour}, Open: tr.open,
		Discoverer: staticDiscoverer("a"), Backup: fb.fn, Now: clk.Now, Logger: testLogger(t), Tune: func(o *PassOptions) { o.SkipPrune = true }}
	if rep := s.RunPass(context.Background()); !rep.OK() {
		t.Fatal(rep.Err())
	}
	clk.Add(25 * time.Hour)
	if st := s.CheckStale(context.Background()); len(st) != 0 {
		t.Fatalf("stale after 25h: %+v", st)
	}
	clk.Add(2 * time.Hour)
	for i := 0; i < 3; i++ {
		if st := s.CheckStale(context.Background()); len(st) != 1 {
			t.Fatalf("not stale after 27h: %+v", st)
		}
	}
	if l := readLines(t, hookLog); len(l) != 1 || !strings.HasPrefix(l[0], "stale|a|h|newest backup of container a is 27h0m0s old") {
		t.Fatalf("hook %q", l)
	}
	if rep := s.RunPass(context.Background()); !rep.OK() {
		t.Fatal(rep.Err())
	}
	clk.Add(27 * time.Hour)
	s.CheckStale(context.Background())
	if l := readLines(t, hookLog); len(l) != 2 {
		t.Errorf("hook %q", l)
	}
}

// TestServiceRefreshAtStart: a fresh Service learns the newest backups and
// drills from the repository, so the dead-man check works before its first
// pass.
func TestServiceRefreshAtStart(t *testing.T) {
	tr := newTestRepo(t)
	t0 := time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC)
	fb := &fakeBackup{host: "h", now: func() time.Time { return t0 }}
	if _, err := fb.fn(context.Background(), tr.r, Target{Name: "a", Detail: "detail-a"}); err != nil {
		t.Fatal(err)
	}
	saveDrillRecord(t, tr.r, "a", false, t0.Add(time.Hour), "h")
	clk := newClock(t0.Add(30 * time.Hour))
	m := NewMetrics(26*time.Hour, clk.Now)
	s := &Service{Config: Config{Host: "h"}, Open: tr.open, Discoverer: staticDiscoverer("a", "b"), Backup: fb.fn, Now: clk.Now, Metrics: m}
	if err := s.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := s.CheckStale(context.Background())
	if len(st) != 1 || st[0].Container != "a" {
		t.Errorf("stale %+v", st)
	}
	out := scrape(t, m)
	for _, want := range []string{
		`scalr_backup_last_success_timestamp_seconds{container="a"} 1.7776044e+09`,
		`scalr_backup_last_drill_success{container="a"} 0`,
		`scalr_backup_snapshots{container="a"} 1`,
		`scalr_backup_stale{container="a"} 1`,
		`scalr_backup_stale{container="b"} 0`,
		`scalr_backup_healthy 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
