package nightly

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// The shipped monitoring: deploy/prometheus's alert rules and their tests,
// deploy/grafana's dashboard.
const (
	rulesFile     = "../deploy/prometheus/scalr-backup.rules.yml"
	rulesTestFile = "../deploy/prometheus/scalr-backup.rules.test.yml"
	dashboardFile = "../deploy/grafana/scalr-backup.json"
)

// exportedNames gathers every metric family a daemon exports once each
// metric has a value: a pass with every kind of row, a drill, the checks,
// the schedule, the build, the Go and process collectors.
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	m := NewMetrics(time.Hour, nil)
	m.RegisterProcess()
	m.SetBuildInfo("test", "rev")
	m.ExpectChecks(CheckRepository, CheckDocker)
	m.ObserveCheck(CheckRepository, nil, time.Now())
	m.SetNextPass(time.Now().Add(time.Hour))
	m.SetNextDrill(time.Now().Add(time.Hour))
	m.SetPassRunning(false)
	m.ObserveDrill("a", true, time.Now())
	m.ObservePass(&Report{Host: "h", Finished: time.Now(), Duration: time.Second,
		Targets:    []TargetReport{{Name: "a", Status: StatusOK, BytesRead: 1}, {Name: "b", Status: StatusFailed, Error: "x"}},
		Inventory:  []ContainerState{{Container: "a", Snapshots: 1, Newest: time.Now(), LastDrill: time.Now()}},
		Forget:     &ForgetReport{},
		Repository: &RepositoryStats{PackBytes: 1, Packs: 1, Snapshots: 1},
		Requests:   backend.Counts{Saves: 1, Retries: 1, BytesUp: 1, BytesDown: 1}})
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// metricRE finds metric names in PromQL: this project's, and the Go and
// process collectors'.
var metricRE = regexp.MustCompile(`\b(scalr_backup_[a-z0-9_]+|go_[a-z0-9_]+|process_[a-z0-9_]+)\b`)

// selectorRE finds every name used as a series selector (NAME{...}), to
// catch names of any other prefix.
var selectorRE = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)

// queriedNames returns the metric names the rules and the dashboard query,
// with where each was seen.
func queriedNames(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	add := func(where, expr string) {
		for _, m := range metricRE.FindAllStringSubmatch(expr, -1) {
			out[m[1]] = where
		}
		for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
			if _, ok := out[m[1]]; !ok {
				out[m[1]] = where
			}
		}
	}
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(rules), "\n") {
		if expr, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:"); ok {
			add(rulesFile, expr)
			n++
		}
	}
	if n < 9 {
		t.Fatalf("%s: %d expr lines, want the 9 alerts at least (multi-line expressions are not read by this test)", rulesFile, n)
	}
	buf, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(buf, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	exprs := 0
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			add(dashboardFile+" panel "+p.Title, tg.Expr)
			exprs++
		}
	}
	if exprs < 20 {
		t.Errorf("the dashboard has %d queries", exprs)
	}
	return out
}

// TestDeployQueriesExportedMetrics: every metric name the alert rules and
// the dashboard query is one the binary exports (up excepted: Prometheus
// records it per scrape target).
func TestDeployQueriesExportedMetrics(t *testing.T) {
	exported := exportedNames(t)
	queried := queriedNames(t)
	var names []string
	for n := range queried {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n == "up" {
			continue
		}
		if !exported[n] {
			t.Errorf("%s queries %s, which scalr-backup does not export", queried[n], n)
		}
	}
	// And the names the issue asks for are there.
	for _, n := range []string{"scalr_backup_stale", "scalr_backup_last_pass_success", "scalr_backup_last_drill_success",
		"scalr_backup_next_pass_timestamp_seconds", "scalr_backup_check_success", "scalr_backup_repository_size_bytes",
		"scalr_backup_build_info", "scalr_backup_pass_running", "process_resident_memory_bytes", "go_goroutines"} {
		if !exported[n] {
			t.Errorf("%s is not exported", n)
		}
		if _, ok := queried[n]; !ok {
			t.Errorf("neither the rules nor the dashboard use %s", n)
		}
	}
	t.Logf("%d metric names queried, all exported", len(names))
}

// TestPromtoolRules runs promtool (Debian's prometheus package, installed by
// scripts/test-setup.sh) on the rules: check rules, then their unit tests.
func TestPromtoolRules(t *testing.T) {
	testenv.Integration(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Missing(t, "promtool not found (Debian package prometheus; scripts/test-setup.sh installs it): %v", err)
	}
	dir, _ := filepath.Abs(filepath.Dir(rulesFile))
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(rulesFile)},
		{"test", "rules", filepath.Base(rulesTestFile)},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		start := time.Now()
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		t.Logf("promtool %s: %s (%s)", strings.Join(args, " "), strings.Join(strings.Fields(string(out)), " "), time.Since(start).Round(time.Millisecond))
	}
}
