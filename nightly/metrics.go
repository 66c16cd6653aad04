package nightly

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Metrics holds the service's Prometheus metrics, in a registry of its own
// (never the global one), and the health state behind /healthz.
//
// A metric that has no value yet is absent, never a made-up 0: the last
// pass's gauges appear with the first pass, the per-container ones with the
// repository's history, the checks with the first check. Counters start at
// 0 (that is their value) and, in a textfile, go on from the previous file
// (see LoadTextfile), so increase() and rate() work across runs.
type Metrics struct {
	reg *prometheus.Registry

	lastSuccess     *prometheus.GaugeVec
	lastStatus      *prometheus.GaugeVec
	lastDuration    *prometheus.GaugeVec
	lastBytesRead   *prometheus.GaugeVec
	lastBytesAdded  *prometheus.GaugeVec
	lastBytesStored *prometheus.GaugeVec
	snapshots       *prometheus.GaugeVec
	stale           *prometheus.GaugeVec
	drillTime       *prometheus.GaugeVec
	drillPassed     *prometheus.GaugeVec
	targetFailures  *prometheus.CounterVec
	requests        *prometheus.CounterVec
	retries         prometheus.Counter
	storageBytes    *prometheus.CounterVec
	passes          prometheus.Counter
	passFailures    prometheus.Counter
	drillFailures   prometheus.Counter
	forgotten       prometheus.Counter
	pruneFreed      prometheus.Counter
	lastPassTime    *prometheus.GaugeVec // no labels: absent until a pass
	lastPassOK      *prometheus.GaugeVec
	lastPassSeconds *prometheus.GaugeVec
	repoBytes       *prometheus.GaugeVec
	repoPacks       *prometheus.GaugeVec
	repoSnapshots   *prometheus.GaugeVec
	passRunning     prometheus.Gauge
	drillRunning    prometheus.Gauge
	nextPass        *prometheus.GaugeVec
	nextDrill       *prometheus.GaugeVec
	checkOK         *prometheus.GaugeVec
	checkTime       *prometheus.GaugeVec
	buildInfo       *prometheus.GaugeVec
	healthy         prometheus.Gauge

	// deferred deletions and the retention extension of the last pass
	deferredFiles, deferredBytes, retentionEnd *prometheus.GaugeVec

	staleAfter time.Duration
	now        func() time.Time
	exp        *expectation

	mu       sync.Mutex
	havePass bool
	passOK   bool
	passErr  string
	checks   map[string]*CheckState
	retry    *retryNote
}

// CheckState is one component's last check (see Service.Check).
type CheckState struct {
	// OK is false while the component has not been checked yet, and after
	// a failed check.
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
	Time  time.Time `json:"time,omitzero"`
}

type retryNote struct {
	at   time.Time
	text string
}

// The check components.
const (
	CheckRepository = "repository"
	CheckDocker     = "docker"
)

// NewMetrics creates the metrics in a new registry. staleAfter is the
// dead-man threshold of the health check (0: DefaultStaleAfter); now is the
// clock (nil: time.Now).
func NewMetrics(staleAfter time.Duration, now func() time.Time) *Metrics {
	if staleAfter <= 0 {
		staleAfter = DefaultStaleAfter
	}
	if now == nil {
		now = time.Now
	}
	m := &Metrics{reg: prometheus.NewRegistry(), staleAfter: staleAfter, now: now, exp: newExpectation(),
		checks: map[string]*CheckState{}}
	c := []string{"container"}
	gv := func(name, help string, labels []string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "scalr_backup", Name: name, Help: help}, labels)
		m.reg.MustRegister(v)
		return v
	}
	g := func(name, help string) prometheus.Gauge {
		v := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "scalr_backup", Name: name, Help: help})
		m.reg.MustRegister(v)
		return v
	}
	cnt := func(name, help string) prometheus.Counter {
		v := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scalr_backup", Name: name, Help: help})
		m.reg.MustRegister(v)
		return v
	}
	cv := func(name, help string, labels []string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scalr_backup", Name: name, Help: help}, labels)
		m.reg.MustRegister(v)
		return v
	}
	m.lastSuccess = gv("last_success_timestamp_seconds", "Time of the newest backup of the container by this host in the repository (Unix seconds), from the repository's history.", c)
	m.lastStatus = gv("last_backup_success", "1 when the container's backup in the last pass succeeded, 0 when it failed (also when it is missing or cannot be backed up).", c)
	m.lastDuration = gv("last_backup_duration_seconds", "How long the container's backup took in the last pass.", c)
	m.lastBytesRead = gv("last_backup_read_bytes", "Bytes read from the container (the dumps) in the last pass.", c)
	m.lastBytesAdded = gv("last_backup_added_bytes", "Bytes of new data (before compression) the container's last backup added to the repository.", c)
	m.lastBytesStored = gv("last_backup_stored_bytes", "Bytes the container's last backup added to storage (compressed, encrypted).", c)
	m.snapshots = gv("snapshots", "Number of backups of the container by this host in the repository, after forget.", c)
	m.stale = gv("stale", "1 when the expected container (backed up by this host before, or discovered now, and not retired) has no backup newer than the dead-man threshold, else 0.", c)
	m.drillTime = gv("last_drill_timestamp_seconds", "Time of the container's newest restore drill (Unix seconds).", c)
	m.drillPassed = gv("last_drill_success", "1 when the container's newest restore drill passed, 0 when it failed.", c)
	m.targetFailures = cv("backup_failures_total", "Failed container backups (missing containers included).", c)
	m.requests = cv("storage_requests_total", "Storage requests by operation (save=PUT, load=GET, stat=HEAD, list=LIST page, remove=DELETE) and outcome (ok, error); retried attempts count as requests.", []string{"op", "outcome"})
	m.retries = cnt("storage_retries_total", "Storage requests that failed and were tried again.")
	m.storageBytes = cv("storage_bytes_total", "Bytes sent to (up) and received from (down) storage.", []string{"direction"})
	m.passes = cnt("passes_total", "Backup passes run (cancelled ones not included).")
	m.passFailures = cnt("pass_failures_total", "Backup passes in which anything failed.")
	m.drillFailures = cnt("drill_failures_total", "Failed restore drills.")
	m.forgotten = cnt("forgotten_snapshots_total", "Snapshots removed by the retention policy.")
	m.pruneFreed = cnt("prune_freed_bytes_total", "Bytes of storage freed by prune.")
	m.deferredFiles = gv("deferred_deletions", "Deletions the storage refused in the last pass's forget and prune (Object Lock retention, bucket lock rules, no delete permission): the files stay and a later pass retries.", nil)
	m.deferredBytes = gv("deferred_deletion_bytes", "Bytes of the packs whose deletion the last pass's prune deferred.", nil)
	m.retentionEnd = gv("retention_earliest_end_timestamp_seconds", "Earliest Object Lock retention end among the objects the kept snapshots need, after the last pass's extension (Unix seconds); absent without retention.", nil)
	m.lastPassTime = gv("last_pass_timestamp_seconds", "When the last pass finished (Unix seconds); absent until this process (or, in a textfile, run) finished one.", nil)
	m.lastPassOK = gv("last_pass_success", "1 when everything in the last pass succeeded; absent until a pass finished.", nil)
	m.lastPassSeconds = gv("last_pass_duration_seconds", "How long the last pass took, opening the repository included; absent until a pass finished.", nil)
	m.repoBytes = gv("repository_size_bytes", "Bytes of the repository's pack files (data/), after the last pass.", nil)
	m.repoPacks = gv("repository_packs", "Number of pack files in the repository, after the last pass.", nil)
	m.repoSnapshots = gv("repository_snapshots", "Number of snapshots in the repository (every host, drill and retirement records included), after the last pass.", nil)
	m.passRunning = g("pass_running", "1 while a backup pass runs.")
	m.drillRunning = g("drill_running", "1 while a restore drill runs.")
	m.nextPass = gv("next_pass_timestamp_seconds", "When the daemon's schedule runs the next pass (Unix seconds).", nil)
	m.nextDrill = gv("next_drill_timestamp_seconds", "When the daemon's schedule runs the next restore drill (Unix seconds).", nil)
	m.checkOK = gv("check_success", "1 when the last check of the component worked (repository: open, password, index, snapshots; docker: the engine answers and discovery works), 0 when it failed or has not finished yet.", []string{"component"})
	m.checkTime = gv("check_timestamp_seconds", "When the component's last check finished (Unix seconds).", []string{"component"})
	m.buildInfo = gv("build_info", "Always 1; the labels say which scalr-backup runs.", []string{"version", "revision", "goversion"})
	m.healthy = g("healthy", "1 when /healthz says healthy: checks pass, the last pass (if any) succeeded, no expected container is stale.")
	return m
}

// Registry returns the metrics' own registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// RegisterProcess adds the Go runtime (go_*) and process (process_*)
// collectors: a long-running daemon's memory, CPU, file descriptors and
// start time. A textfile leaves them out: they would describe a process
// that has exited.
func (m *Metrics) RegisterProcess() {
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// SetBuildInfo sets scalr_backup_build_info.
func (m *Metrics) SetBuildInfo(version, revision string) {
	if revision == "" {
		revision = "unknown"
	}
	m.buildInfo.Reset()
	m.buildInfo.WithLabelValues(version, revision, runtime.Version()).Set(1)
}

// SetPassRunning and SetDrillRunning set the running gauges.
func (m *Metrics) SetPassRunning(on bool)  { m.passRunning.Set(b2f(on)) }
func (m *Metrics) SetDrillRunning(on bool) { m.drillRunning.Set(b2f(on)) }

// SetNextPass and SetNextDrill set when the schedule runs next (zero
// removes the gauge).
func (m *Metrics) SetNextPass(t time.Time)  { setTime(m.nextPass, t) }
func (m *Metrics) SetNextDrill(t time.Time) { setTime(m.nextDrill, t) }

func setTime(v *prometheus.GaugeVec, t time.Time) {
	if t.IsZero() {
		v.Reset()
		return
	}
	v.WithLabelValues().Set(unix(t))
}

// ExpectChecks declares components whose check has not run yet: until it
// has worked, /healthz is 503 saying so (the daemon declares the
// repository and the Docker engine at start).
func (m *Metrics) ExpectChecks(components ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range components {
		if _, ok := m.checks[c]; !ok {
			m.checks[c] = &CheckState{}
			m.checkOK.WithLabelValues(c).Set(0)
		}
	}
}

// ObserveCheck records the outcome of a component's check at time at.
func (m *Metrics) ObserveCheck(component string, err error, at time.Time) {
	st := &CheckState{OK: err == nil, Time: at.UTC()}
	if err != nil {
		st.Error = err.Error()
	}
	m.mu.Lock()
	m.checks[component] = st
	if component == CheckRepository && err == nil {
		m.retry = nil
	}
	m.mu.Unlock()
	m.checkOK.WithLabelValues(component).Set(b2f(err == nil))
	m.checkTime.WithLabelValues(component).Set(unix(at))
	m.refreshHealth()
}

// NoteRetry records a storage retry: while the repository's check has not
// worked, /healthz shows the latest one as what is going on.
func (m *Metrics) NoteRetry(ev backend.RetryEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retry = &retryNote{at: m.now(), text: ev.String()}
}

// ObservePass records a finished pass. A cancelled pass only adds its
// storage requests.
func (m *Metrics) ObservePass(rep *Report) {
	m.AddRequests(rep.Requests)
	if rep.Cancelled {
		return
	}
	m.passes.Inc()
	ok := rep.OK()
	if !ok {
		m.passFailures.Inc()
	}
	m.lastPassTime.WithLabelValues().Set(unix(rep.Finished))
	m.lastPassOK.WithLabelValues().Set(b2f(ok))
	m.lastPassSeconds.WithLabelValues().Set(rep.Duration.Seconds())
	if rep.Forget != nil {
		m.forgotten.Add(float64(rep.Forget.Removed))
	}
	if rep.Prune != nil {
		m.pruneFreed.Add(float64(rep.Prune.RemoveSize + rep.Prune.UnreferencedSize))
	}
	if rep.Forget != nil || rep.Prune != nil {
		var files, size float64
		if rep.Forget != nil {
			files += float64(rep.Forget.Deferred.Files)
		}
		if rep.Prune != nil {
			files += float64(rep.Prune.Deferred.Files)
			size += float64(rep.Prune.Deferred.Size)
		}
		m.deferredFiles.WithLabelValues().Set(files)
		m.deferredBytes.WithLabelValues().Set(size)
	}
	if st := rep.Retention; st != nil && !st.EarliestEnd.IsZero() {
		setTime(m.retentionEnd, st.EarliestEnd)
	}
	if st := rep.Repository; st != nil {
		m.repoBytes.WithLabelValues().Set(float64(st.PackBytes))
		m.repoPacks.WithLabelValues().Set(float64(st.Packs))
		m.repoSnapshots.WithLabelValues().Set(float64(st.Snapshots))
	}

	discovered := !discoveryFailed(rep)
	if discovered {
		for _, v := range []*prometheus.GaugeVec{m.lastStatus, m.lastDuration, m.lastBytesRead, m.lastBytesAdded, m.lastBytesStored} {
			v.Reset()
		}
	}
	for _, t := range rep.Targets {
		if t.Status == StatusSkipped || t.Status == StatusRetired {
			continue
		}
		m.lastStatus.WithLabelValues(t.Name).Set(b2f(t.Status == StatusOK))
		m.lastDuration.WithLabelValues(t.Name).Set(t.Duration.Seconds())
		if t.Status == StatusOK {
			m.lastBytesRead.WithLabelValues(t.Name).Set(float64(t.BytesRead))
			m.lastBytesAdded.WithLabelValues(t.Name).Set(float64(t.BytesAdded))
			m.lastBytesStored.WithLabelValues(t.Name).Set(float64(t.BytesStored))
		} else {
			m.targetFailures.WithLabelValues(t.Name).Inc()
		}
	}

	m.mu.Lock()
	m.havePass, m.passOK = true, ok
	m.passErr = ""
	if err := rep.Err(); err != nil {
		m.passErr = err.Error()
	}
	m.mu.Unlock()
	if discovered {
		m.exp.setDiscovered(discoveredNames(rep), m.now())
	}
	if len(rep.Inventory) > 0 || discovered {
		m.ObserveInventory(rep.Inventory, nil)
	} else {
		m.refreshHealth()
	}
}

// discoveredNames are the containers a pass's discovery listed (not the
// missing ones it added).
func discoveredNames(rep *Report) []string {
	var out []string
	for _, t := range rep.Targets {
		if !t.Missing {
			out = append(out, t.Name)
		}
	}
	return out
}

// ObserveInventory records what the repository holds for this host
// (snapshot counts, newest backups, drills, retirements). With targets
// non-nil it also sets the containers discovered now.
func (m *Metrics) ObserveInventory(inv []ContainerState, targets []Target) {
	m.snapshots.Reset()
	m.lastSuccess.Reset()
	for _, st := range inv {
		if st.Snapshots > 0 {
			m.snapshots.WithLabelValues(st.Container).Set(float64(st.Snapshots))
		}
		if !st.Newest.IsZero() {
			m.lastSuccess.WithLabelValues(st.Container).Set(unix(st.Newest))
		}
		if !st.LastDrill.IsZero() {
			m.drillTime.WithLabelValues(st.Container).Set(unix(st.LastDrill))
			m.drillPassed.WithLabelValues(st.Container).Set(b2f(st.LastDrillPassed))
		}
	}
	m.exp.setInventory(inv)
	if targets != nil {
		m.exp.setDiscovered(targetNames(targets), m.now())
	}
	m.refreshHealth()
}

// ObserveDrill records a drill's outcome for a container.
func (m *Metrics) ObserveDrill(container string, passed bool, at time.Time) {
	m.drillTime.WithLabelValues(container).Set(unix(at))
	m.drillPassed.WithLabelValues(container).Set(b2f(passed))
	if !passed {
		m.drillFailures.Inc()
	}
}

// AddRequests adds storage request counts.
func (m *Metrics) AddRequests(c backend.Counts) {
	for _, x := range []struct {
		op       string
		all, bad int64
	}{
		{"save", c.Saves, c.SaveErrors}, {"load", c.Loads, c.LoadErrors}, {"stat", c.Stats, c.StatErrors},
		{"list", c.ListPages, c.ListErrors}, {"remove", c.Removes, c.RemoveErrors},
		{"extend_retention", c.RetentionExtends, c.RetentionExtendErrors},
	} {
		okN := max(0, x.all-x.bad)
		m.requests.WithLabelValues(x.op, "ok").Add(float64(okN))
		m.requests.WithLabelValues(x.op, "error").Add(float64(x.bad))
	}
	if c.Retries > 0 {
		m.retries.Add(float64(c.Retries))
	}
	m.storageBytes.WithLabelValues("up").Add(float64(max(0, c.BytesUp)))
	m.storageBytes.WithLabelValues("down").Add(float64(max(0, c.BytesDown)))
}

// Health is what /healthz reports.
type Health struct {
	OK bool `json:"ok"`
	// Reasons says, one line each, why it is not OK (empty when OK).
	Reasons []string `json:"reasons"`
	// LastPass is "ok", "failed" or "none" (no pass since the start).
	LastPass      string       `json:"last_pass"`
	LastPassError string       `json:"last_pass_error,omitempty"`
	Stale         []StaleAlert `json:"stale"`
	// Checks are the components' last checks (the daemon's start-up and
	// periodic checks of the repository and the Docker engine).
	Checks map[string]CheckState `json:"checks,omitempty"`
}

// Health evaluates the health now: every check declared or run has worked,
// the last pass (if any since the start) succeeded, and no expected
// container is stale.
func (m *Metrics) Health() Health {
	now := m.now()
	h := Health{LastPass: "none", Stale: m.exp.stale(now, m.staleAfter), Reasons: []string{}}
	if h.Stale == nil {
		h.Stale = []StaleAlert{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.checks))
	for c := range m.checks {
		names = append(names, c)
	}
	sort.Strings(names)
	if len(names) > 0 {
		h.Checks = map[string]CheckState{}
	}
	for _, c := range names {
		st := *m.checks[c]
		h.Checks[c] = st
		if st.OK {
			continue
		}
		why := st.Error
		if st.Time.IsZero() {
			why = "not checked yet (check in progress)"
		}
		if c == CheckRepository && m.retry != nil && m.retry.at.After(st.Time) {
			why += "; storage retrying: " + m.retry.text
		}
		h.Reasons = append(h.Reasons, c+": "+why)
	}
	if m.havePass {
		h.LastPass = "ok"
		if !m.passOK {
			h.LastPass, h.LastPassError = "failed", m.passErr
			h.Reasons = append(h.Reasons, "last pass failed: "+firstLine(m.passErr))
		}
	}
	for _, s := range h.Stale {
		h.Reasons = append(h.Reasons, "stale: "+s.String())
	}
	h.OK = len(h.Reasons) == 0
	return h
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// refreshHealth updates the stale and healthy gauges from the state; the
// daemon calls it periodically so the gauges age without a pass.
func (m *Metrics) refreshHealth() Health {
	h := m.Health()
	staleSet := map[string]bool{}
	for _, s := range h.Stale {
		staleSet[s.Container] = true
	}
	m.stale.Reset()
	for _, name := range m.exp.expected() {
		m.stale.WithLabelValues(name).Set(b2f(staleSet[name]))
	}
	m.healthy.Set(b2f(h.OK))
	return h
}

// Handler serves /metrics (the registry, text or OpenMetrics) and /healthz
// (200 when healthy, else 503, with Health as JSON).
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	prom := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
	mux.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.refreshHealth()
		prom.ServeHTTP(w, r)
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		h := m.refreshHealth()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !h.OK {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(h)
	})
	return mux
}

// LoadTextfile reads the counters of a previous textfile at path and adds
// them to these metrics, so that a textfile's counters are cumulative over
// runs (each run of `run` is a new process). A missing file is no error
// (the first run); a file that does not parse, or a counter whose labels
// differ from this version's, is skipped with the error returned, so the
// counters restart from 0, which Prometheus reads as a counter reset.
func (m *Metrics) LoadTextfile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("textfile: %w", err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		return fmt.Errorf("textfile %s: previous counters not read: %w", path, err)
	}
	counters := map[string]any{
		"scalr_backup_backup_failures_total":     m.targetFailures,
		"scalr_backup_storage_requests_total":    m.requests,
		"scalr_backup_storage_retries_total":     m.retries,
		"scalr_backup_storage_bytes_total":       m.storageBytes,
		"scalr_backup_passes_total":              m.passes,
		"scalr_backup_pass_failures_total":       m.passFailures,
		"scalr_backup_drill_failures_total":      m.drillFailures,
		"scalr_backup_forgotten_snapshots_total": m.forgotten,
		"scalr_backup_prune_freed_bytes_total":   m.pruneFreed,
	}
	var errs []error
	for name, c := range counters {
		fam := fams[name]
		if fam == nil || fam.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, mt := range fam.Metric {
			v := mt.GetCounter().GetValue()
			if v <= 0 {
				continue
			}
			labels := prometheus.Labels{}
			for _, lp := range mt.Label {
				labels[lp.GetName()] = lp.GetValue()
			}
			switch c := c.(type) {
			case prometheus.Counter:
				if len(labels) == 0 {
					c.Add(v)
				}
			case *prometheus.CounterVec:
				cc, err := c.GetMetricWith(labels)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s%v: %w", name, labels, err))
					continue
				}
				cc.Add(v)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("textfile %s: some previous counters not carried over: %w", path, errors.Join(errs...))
	}
	return nil
}

// WriteTextfile writes the metrics in Prometheus' text format to path for
// node_exporter's textfile collector, atomically: a temporary file in the
// same folder (not ending in .prom, so the collector never reads it half
// written) is synced and renamed over path.
func (m *Metrics) WriteTextfile(path string) error {
	m.refreshHealth()
	mfs, err := m.reg.Gather()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("textfile: %w", err)
	}
	defer os.Remove(tmp.Name())
	sort.Slice(mfs, func(i, j int) bool { return mfs[i].GetName() < mfs[j].GetName() })
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(tmp, mf); err != nil {
			tmp.Close()
			return fmt.Errorf("textfile: %w", err)
		}
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("textfile: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("textfile: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("textfile: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("textfile: %w", err)
	}
	return nil
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
