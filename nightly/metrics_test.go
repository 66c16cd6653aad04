package nightly

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs /metrics from the handler and returns the text.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rr := httptest.NewRecorder()
	m.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	if rr.Code != 200 {
		t.Fatalf("/metrics: %d", rr.Code)
	}
	return rr.Body.String()
}

func healthz(t *testing.T, m *Metrics) (int, Health) {
	t.Helper()
	rr := httptest.NewRecorder()
	m.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/healthz", nil))
	var h Health
	if err := json.Unmarshal(rr.Body.Bytes(), &h); err != nil {
		t.Fatalf("/healthz body %q: %v", rr.Body.String(), err)
	}
	return rr.Code, h
}

func TestMetricsAfterPass(t *testing.T) {
	tr := newTestRepo(t)
	clk := newClock(time.Date(2026, 5, 2, 3, 0, 0, 0, time.UTC))
	fail := true
	fb := &fakeBackup{host: "h", now: clk.Now, fail: func(name string, _ int) error {
		if fail && name == "b" {
			return errDumpFailed
		}
		return nil
	}}
	m := NewMetrics(26*time.Hour, clk.Now)
	s := &Service{Config: Config{Host: "h"}, Open: tr.open, Discoverer: staticDiscoverer("a", "b"), Backup: fb.fn,
		Now: clk.Now, Metrics: m, Logger: testLogger(t)}
	rep := s.RunPass(context.Background())
	if rep.OK() {
		t.Fatal("pass OK")
	}
	out := scrape(t, m)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, out)
	}
	val := func(name string, labels ...string) (float64, bool) {
		f, ok := fams[name]
		if !ok {
			return 0, false
		}
	next:
		for _, mt := range f.Metric {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range mt.Label {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
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
	a := rep.State("a")
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"scalr_backup_last_backup_success", []string{"container", "a"}, 1},
		{"scalr_backup_last_backup_success", []string{"container", "b"}, 0},
		{"scalr_backup_last_success_timestamp_seconds", []string{"container", "a"}, float64(a.Newest.Unix())},
		{"scalr_backup_last_backup_read_bytes", []string{"container", "a"}, 4096},
		{"scalr_backup_last_backup_added_bytes", []string{"container", "a"}, float64(rep.Targets[0].BytesAdded)},
		{"scalr_backup_snapshots", []string{"container", "a"}, 1},
		{"scalr_backup_backup_failures_total", []string{"container", "b"}, 1},
		{"scalr_backup_passes_total", nil, 1},
		{"scalr_backup_pass_failures_total", nil, 1},
		{"scalr_backup_last_pass_success", nil, 0},
		{"scalr_backup_stale", []string{"container", "b"}, 0}, // no backup, but first seen just now
		{"scalr_backup_stale", []string{"container", "a"}, 0},
		{"scalr_backup_healthy", nil, 0},
		{"scalr_backup_storage_requests_total", []string{"op", "save", "outcome", "ok"}, float64(rep.Requests.Saves)},
		{"scalr_backup_storage_requests_total", []string{"op", "save", "outcome", "error"}, 0},
		{"scalr_backup_storage_requests_total", []string{"op", "list", "outcome", "ok"}, float64(rep.Requests.ListPages)},
		{"scalr_backup_repository_packs", nil, float64(rep.Repository.Packs)},
		{"scalr_backup_repository_size_bytes", nil, float64(rep.Repository.PackBytes)},
		{"scalr_backup_repository_snapshots", nil, 1},
	}
	for _, c := range checks {
		got, ok := val(c.name, c.labels...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if got, _ := val("scalr_backup_last_backup_duration_seconds", "container", "a"); got <= 0 {
		t.Errorf("duration a = %v", got)
	}
	if rep.Requests.Saves == 0 {
		t.Error("no saves counted: the test repo's backend is not counted")
	}
	if _, ok := val("scalr_backup_last_backup_read_bytes", "container", "b"); ok {
		t.Error("a failed backup has bytes read")
	}
	code, h := healthz(t, m)
	if code != 503 || h.OK || h.LastPass != "failed" || len(h.Stale) != 0 {
		t.Errorf("healthz %d %+v", code, h)
	}

	// Next pass succeeds: healthy; a day and a half later without a pass,
	// stale and unhealthy.
	fail = false
	clk.Add(time.Hour)
	if rep := s.RunPass(context.Background()); !rep.OK() {
		t.Fatal(rep.Err())
	}
	if code, h := healthz(t, m); code != 200 || !h.OK || h.LastPass != "ok" || len(h.Stale) != 0 {
		t.Errorf("healthz after success %d %+v", code, h)
	}
	out = scrape(t, m)
	if !strings.Contains(out, `scalr_backup_passes_total 2`) || !strings.Contains(out, `scalr_backup_pass_failures_total 1`) ||
		!strings.Contains(out, `scalr_backup_snapshots{container="a"} 2`) || !strings.Contains(out, "scalr_backup_healthy 1") {
		t.Errorf("after second pass:\n%s", out)
	}
	clk.Add(27 * time.Hour)
	if code, h := healthz(t, m); code != 503 || len(h.Stale) != 2 || h.LastPass != "ok" {
		t.Errorf("healthz when stale %d %+v", code, h)
	}
}

func TestMetricsBeforeFirstPass(t *testing.T) {
	m := NewMetrics(0, nil)
	if code, h := healthz(t, m); code != 200 || h.LastPass != "none" {
		t.Errorf("no pass, no targets: %d %+v", code, h)
	}
	m.ObserveDrill("a", false, time.Unix(1000, 0))
	out := scrape(t, m)
	for _, want := range []string{`scalr_backup_last_drill_success{container="a"} 0`, `scalr_backup_last_drill_timestamp_seconds{container="a"} 1000`, `scalr_backup_drill_failures_total 1`} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q", want)
		}
	}
	// Not the default registry: nothing of Go's runtime collectors.
	if strings.Contains(out, "go_goroutines") {
		t.Error("the default registry's collectors leaked in")
	}
}

func TestWriteTextfile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "scalr_backup.prom")
	m := NewMetrics(0, nil)
	m.ObservePass(&Report{Host: "h", Finished: time.Unix(2000, 0), Targets: []TargetReport{{Name: "a", Status: StatusOK, BytesRead: 7}},
		Inventory: []ContainerState{{Container: "a", Snapshots: 3, Newest: time.Unix(1900, 0)}}})
	if err := os.WriteFile(p, []byte("old content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteTextfile(p); err != nil {
		t.Fatal(err)
	}
	buf, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(buf)))
	if err != nil {
		t.Fatalf("not valid text format: %v", err)
	}
	if f := fams["scalr_backup_last_success_timestamp_seconds"]; f == nil || f.Metric[0].Gauge.GetValue() != 1900 {
		t.Errorf("last success %v", f)
	}
	if f := fams["scalr_backup_last_backup_read_bytes"]; f == nil || f.Metric[0].Gauge.GetValue() != 7 {
		t.Errorf("read bytes %v", f)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left: %v", entries)
	}
	if err := m.WriteTextfile(filepath.Join(dir, "missing", "x.prom")); err == nil {
		t.Error("no error for a missing folder")
	}
}

func TestMetricsServedOverHTTP(t *testing.T) {
	m := NewMetrics(0, nil)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "scalr_backup_passes_total 0") {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
}
