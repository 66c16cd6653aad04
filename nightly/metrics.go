package nightly

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Metrics holds the service's Prometheus metrics, in a registry of its own
// (never the global one), and the health state behind /healthz.
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
	storageBytes    *prometheus.CounterVec
	passes          prometheus.Counter
	passFailures    prometheus.Counter
	drillFailures   prometheus.Counter
	forgotten       prometheus.Counter
	pruneFreed      prometheus.Counter
	lastPassTime    prometheus.Gauge
	lastPassOK      prometheus.Gauge
	lastPassSeconds prometheus.Gauge
	healthy         prometheus.Gauge

	staleAfter time.Duration
	now        func() time.Time

	mu        sync.Mutex
	havePass  bool
	passOK    bool
	passErr   string
	targets   []string
	newest    map[string]time.Time
	firstSeen map[string]time.Time
}

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
	m := &Metrics{reg: prometheus.NewRegistry(), staleAfter: staleAfter, now: now, newest: map[string]time.Time{}, firstSeen: map[string]time.Time{}}
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
	m.lastSuccess = gv("last_success_timestamp_seconds", "Time of the newest backup of the container in the repository (Unix seconds).", c)
	m.lastStatus = gv("last_backup_success", "1 when the container's backup in the last pass succeeded, 0 when it failed.", c)
	m.lastDuration = gv("last_backup_duration_seconds", "How long the container's backup took in the last pass.", c)
	m.lastBytesRead = gv("last_backup_read_bytes", "Bytes read from the container (the dumps) in the last pass.", c)
	m.lastBytesAdded = gv("last_backup_added_bytes", "Bytes of new data (before compression) the container's last backup added to the repository.", c)
	m.lastBytesStored = gv("last_backup_stored_bytes", "Bytes the container's last backup added to storage (compressed, encrypted).", c)
	m.snapshots = gv("snapshots", "Number of backups of the container in the repository, after forget.", c)
	m.stale = gv("stale", "1 when the container's newest backup is older than the dead-man threshold (or missing).", c)
	m.drillTime = gv("last_drill_timestamp_seconds", "Time of the container's newest restore drill (Unix seconds).", c)
	m.drillPassed = gv("last_drill_success", "1 when the container's newest restore drill passed, 0 when it failed.", c)
	m.targetFailures = cv("backup_failures_total", "Failed container backups.", c)
	m.requests = cv("storage_requests_total", "Storage requests by kind (save=PUT, load=GET, stat=HEAD, list_page=LIST request, remove=DELETE, error, retry).", []string{"op"})
	m.storageBytes = cv("storage_bytes_total", "Bytes sent to (up) and received from (down) storage.", []string{"direction"})
	m.passes = cnt("passes_total", "Backup passes run (cancelled ones not included).")
	m.passFailures = cnt("pass_failures_total", "Backup passes in which anything failed.")
	m.drillFailures = cnt("drill_failures_total", "Failed restore drills.")
	m.forgotten = cnt("forgotten_snapshots_total", "Snapshots removed by the retention policy.")
	m.pruneFreed = cnt("prune_freed_bytes_total", "Bytes of storage freed by prune.")
	m.lastPassTime = g("last_pass_timestamp_seconds", "When the last pass finished (Unix seconds).")
	m.lastPassOK = g("last_pass_success", "1 when everything in the last pass succeeded.")
	m.lastPassSeconds = g("last_pass_duration_seconds", "How long the last pass took.")
	m.healthy = g("healthy", "1 when the last pass succeeded and no container is stale (what /healthz says).")
	return m
}

// Registry returns the metrics' own registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

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
	m.lastPassTime.Set(unix(rep.Finished))
	m.lastPassOK.Set(b2f(ok))
	m.lastPassSeconds.Set(rep.Duration.Seconds())
	if rep.Forget != nil {
		m.forgotten.Add(float64(rep.Forget.Removed))
	}
	if rep.Prune != nil {
		m.pruneFreed.Add(float64(rep.Prune.RemoveSize + rep.Prune.UnreferencedSize))
	}

	discovered := true
	for _, e := range rep.Errors {
		if e.Stage == "discover" || e.Stage == "open" {
			discovered = false
		}
	}
	if discovered {
		for _, v := range []*prometheus.GaugeVec{m.lastStatus, m.lastDuration, m.lastBytesRead, m.lastBytesAdded, m.lastBytesStored} {
			v.Reset()
		}
	}
	for _, t := range rep.Targets {
		if t.Status == StatusSkipped {
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
	if discovered {
		m.setTargets(targetNames(targetsOf(rep)))
	}
	m.mu.Unlock()
	if len(rep.Inventory) > 0 || discovered {
		m.ObserveInventory(rep.Inventory, nil)
	} else {
		m.refreshHealth()
	}
}

func targetsOf(rep *Report) []Target {
	out := make([]Target, len(rep.Targets))
	for i, t := range rep.Targets {
		out[i] = Target{Name: t.Name}
	}
	return out
}

// ObserveInventory records what the repository holds (snapshot counts,
// newest backups, drills). With targets non-nil it also sets the containers
// the health check expects backups of (the daemon does that at start, before
// its first pass).
func (m *Metrics) ObserveInventory(inv []ContainerState, targets []Target) {
	m.snapshots.Reset()
	m.lastSuccess.Reset()
	m.mu.Lock()
	m.newest = map[string]time.Time{}
	for _, st := range inv {
		m.snapshots.WithLabelValues(st.Container).Set(float64(st.Snapshots))
		if !st.Newest.IsZero() {
			m.lastSuccess.WithLabelValues(st.Container).Set(unix(st.Newest))
			m.newest[st.Container] = st.Newest
		}
		if !st.LastDrill.IsZero() {
			m.drillTime.WithLabelValues(st.Container).Set(unix(st.LastDrill))
			m.drillPassed.WithLabelValues(st.Container).Set(b2f(st.LastDrillPassed))
		}
	}
	if targets != nil {
		m.setTargets(targetNames(targets))
	}
	m.mu.Unlock()
	m.refreshHealth()
}

// setTargets sets the expected containers, remembering when each was first
// seen; the caller holds m.mu.
func (m *Metrics) setTargets(names []string) {
	m.targets = names
	now := m.now()
	for _, n := range names {
		if _, ok := m.firstSeen[n]; !ok {
			m.firstSeen[n] = now
		}
	}
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
		op string
		n  int64
	}{
		{"save", c.Saves}, {"load", c.Loads}, {"stat", c.Stats}, {"list", c.Lists},
		{"list_page", c.ListPages}, {"remove", c.Removes}, {"error", c.Errors}, {"retry", c.Retries},
	} {
		if x.n > 0 {
			m.requests.WithLabelValues(x.op).Add(float64(x.n))
		} else {
			m.requests.WithLabelValues(x.op)
		}
	}
	if c.BytesUp > 0 {
		m.storageBytes.WithLabelValues("up").Add(float64(c.BytesUp))
	}
	if c.BytesDown > 0 {
		m.storageBytes.WithLabelValues("down").Add(float64(c.BytesDown))
	}
}

// Health is what /healthz reports.
type Health struct {
	OK bool `json:"ok"`
	// LastPass is "ok", "failed" or "none" (no pass since the start).
	LastPass      string       `json:"last_pass"`
	LastPassError string       `json:"last_pass_error,omitempty"`
	Stale         []StaleAlert `json:"stale"`
}

// Health evaluates the health now: the last pass (if any since the start)
// succeeded and no expected container is stale.
func (m *Metrics) Health() Health {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := Health{LastPass: "none", Stale: staleFromNewest(m.newest, m.firstSeen, m.targets, m.now(), m.staleAfter)}
	if h.Stale == nil {
		h.Stale = []StaleAlert{}
	}
	if m.havePass {
		h.LastPass = "ok"
		if !m.passOK {
			h.LastPass, h.LastPassError = "failed", m.passErr
		}
	}
	h.OK = (!m.havePass || m.passOK) && len(h.Stale) == 0
	return h
}

// refreshHealth updates the stale and healthy gauges from the state; the
// daemon calls it periodically so the gauges age without a pass.
func (m *Metrics) refreshHealth() Health {
	h := m.Health()
	m.stale.Reset()
	m.mu.Lock()
	targets := append([]string(nil), m.targets...)
	m.mu.Unlock()
	staleSet := map[string]bool{}
	for _, s := range h.Stale {
		staleSet[s.Container] = true
	}
	for _, t := range targets {
		m.stale.WithLabelValues(t).Set(b2f(staleSet[t]))
	}
	m.healthy.Set(b2f(h.OK))
	return h
}

// Handler serves /metrics (the registry, text or OpenMetrics) and /healthz
// (200 when healthy, else 503, with Health as JSON).
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
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
