package nightly

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/repo"
)

// Service is the nightly job without a schedule: it runs a pass or a drill
// end to end (open the repository, do the work, close it, record metrics,
// alert) and keeps what the dead-man check needs between runs. `run` uses
// one Service for one pass; the Daemon uses one for its whole life.
type Service struct {
	Config Config
	// Open opens the repository (creating it if the caller wants that) on
	// a backend of its own; the Service closes both after each pass or
	// drill. Opening afresh every time means every pass loads a current
	// index: a prune by another process between two passes can never make
	// a backup reuse data that is gone.
	Open       func(ctx context.Context) (*repo.Repository, error)
	Discoverer Discoverer
	Backup     BackupFunc
	// Drill may be nil: RunDrill then fails.
	Drill DrillFunc
	// Alerter sends alerts (nil: Config.Alerter() with Logger and Now).
	Alerter *Alerter
	// Metrics records metrics (nil: none).
	Metrics *Metrics
	Logger  *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Tune, when set, adjusts each pass's options (Config.PassOptions()
	// plus the injected functions) before it runs.
	Tune func(*PassOptions)

	initOnce sync.Once
	alerter  *Alerter

	mu        sync.Mutex
	targets   []string             // of the last discovery that worked
	newest    map[string]time.Time // newest backup per container
	firstSeen map[string]time.Time // when each target was first discovered
	alerted   map[string]bool      // containers already reported stale
}

func (s *Service) init() {
	s.initOnce.Do(func() {
		if s.Logger == nil {
			s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
		if s.Now == nil {
			s.Now = time.Now
		}
		s.alerter = s.Alerter
		if s.alerter == nil {
			s.alerter = s.Config.Alerter()
			s.alerter.Logger = s.Logger
			s.alerter.Now = s.Now
		}
		if s.alerter.Host == "" {
			s.alerter.Host = s.Config.Host
		}
		if s.newest == nil {
			s.newest = map[string]time.Time{}
		}
		s.alerted = map[string]bool{}
		s.firstSeen = map[string]time.Time{}
	})
}

func (s *Service) open(ctx context.Context) (*repo.Repository, func(), error) {
	if s.Open == nil {
		return nil, nil, errors.New("nightly: Service.Open is not set")
	}
	r, err := s.Open(ctx)
	if err != nil {
		return nil, nil, err
	}
	return r, func() {
		be := r.Backend()
		_ = r.Close()
		if be != nil {
			_ = be.Close()
		}
	}, nil
}

// RunPass runs one pass end to end: healthcheck start ping, open, Pass,
// close, metrics, alerts (failures or success, then the dead-man check over
// the discovered containers). It never returns nil.
func (s *Service) RunPass(ctx context.Context) *Report {
	s.init()
	log := s.Logger
	log.Info("backup pass starting", "host", s.Config.Host)
	_ = s.alerter.PassStarted(ctx)

	var rep *Report
	r, closeRepo, err := s.open(ctx)
	if err != nil {
		now := s.Now().UTC()
		rep = &Report{Host: s.Config.Host, Started: now, Finished: now, Targets: []TargetReport{}, Inventory: []ContainerState{}}
		rep.fail("open", err)
		rep.Cancelled = ctx.Err() != nil
		log.Error("opening the repository failed", "error", err)
	} else {
		o := s.Config.PassOptions()
		o.Discoverer, o.Backup, o.Now, o.Logger = s.Discoverer, s.Backup, s.Now, log
		if s.Tune != nil {
			s.Tune(&o)
		}
		rep = Pass(ctx, r, o)
		closeRepo()
	}

	if s.Metrics != nil {
		s.Metrics.ObservePass(rep)
	}
	level := slog.LevelInfo
	if !rep.OK() {
		level = slog.LevelError
	}
	log.Log(ctx, level, "backup pass finished", "ok", rep.OK(), "cancelled", rep.Cancelled,
		"duration", rep.Duration.Round(time.Millisecond).String(), "targets", len(rep.Targets),
		"failed", len(rep.Failed()), "requests", rep.Requests.String())
	if rep.Cancelled {
		return rep
	}
	_ = s.alerter.PassFinished(ctx, rep)

	discovered := true
	for _, e := range rep.Errors {
		if e.Stage == "discover" || e.Stage == "open" {
			discovered = false
		}
	}
	s.mu.Lock()
	if discovered {
		s.setTargets(targetNames(targetsOf(rep)))
	}
	if len(rep.Inventory) > 0 || discovered {
		s.newest = newestOf(rep.Inventory)
	}
	s.mu.Unlock()
	s.CheckStale(ctx)
	return rep
}

func newestOf(inv []ContainerState) map[string]time.Time {
	m := make(map[string]time.Time, len(inv))
	for _, st := range inv {
		if !st.Newest.IsZero() {
			m[st.Container] = st.Newest
		}
	}
	return m
}

// Refresh loads the state a fresh start lacks: the repository's inventory
// (newest backup and drill per container, for metrics and the dead-man
// check) and the current targets. The daemon calls it once at start.
func (s *Service) Refresh(ctx context.Context) error {
	s.init()
	r, closeRepo, err := s.open(ctx)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer closeRepo()
	snaps, err := r.ListSnapshots(ctx)
	if err != nil {
		return err
	}
	inv := Inventory(snaps, s.Config.Host)
	var targets []Target
	var derr error
	if s.Discoverer != nil {
		targets, derr = s.Discoverer.Discover(ctx)
	}
	s.mu.Lock()
	s.newest = newestOf(inv)
	if derr == nil && targets != nil {
		s.setTargets(targetNames(targets))
	}
	s.mu.Unlock()
	if s.Metrics != nil {
		if derr != nil {
			targets = nil
		} else if targets == nil {
			targets = []Target{}
		}
		s.Metrics.ObserveInventory(inv, targets)
	}
	if derr != nil {
		return fmt.Errorf("discover: %w", derr)
	}
	return nil
}

// setTargets sets the expected containers, remembering when each was first
// seen; the caller holds s.mu.
func (s *Service) setTargets(names []string) {
	s.targets = names
	now := s.Now()
	for _, n := range names {
		if _, ok := s.firstSeen[n]; !ok {
			s.firstSeen[n] = now
		}
	}
}

// CheckStale runs the dead-man check on the state of the last pass (or
// Refresh): it alerts once for each container that became stale (stale
// again after a fresh backup alerts again) and returns every stale one. A
// container without any backup counts as stale once the threshold has
// passed since this Service first discovered it.
func (s *Service) CheckStale(ctx context.Context) []StaleAlert {
	s.init()
	s.mu.Lock()
	stale := staleFromNewest(s.newest, s.firstSeen, s.targets, s.Now(), s.staleAfter())
	var fresh []StaleAlert
	now := map[string]bool{}
	for _, a := range stale {
		now[a.Container] = true
		if !s.alerted[a.Container] {
			fresh = append(fresh, a)
		}
	}
	s.alerted = now
	s.mu.Unlock()
	for _, a := range fresh {
		s.Logger.Warn("dead-man check: backup is stale", "container", a.Container, "detail", a.String())
	}
	if len(fresh) > 0 {
		_ = s.alerter.Stale(ctx, fresh)
	}
	if s.Metrics != nil {
		s.Metrics.refreshHealth()
	}
	return stale
}

func (s *Service) staleAfter() time.Duration {
	if s.Config.StaleAfter > 0 {
		return s.Config.StaleAfter
	}
	return DefaultStaleAfter
}

// DrillTargetReport is one container's drill outcome.
type DrillTargetReport struct {
	Name     string        `json:"container"`
	Passed   bool          `json:"passed"`
	Snapshot string        `json:"snapshot,omitempty"`
	RecordID string        `json:"record_id,omitempty"`
	Error    string        `json:"error,omitempty"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"-"`
}

// MarshalJSON adds duration_seconds.
func (t DrillTargetReport) MarshalJSON() ([]byte, error) {
	type plain DrillTargetReport
	return json.Marshal(struct {
		plain
		Seconds float64 `json:"duration_seconds"`
	}{plain(t), t.Duration.Seconds()})
}

// DrillReport is the outcome of a drill run over every target.
type DrillReport struct {
	Host      string              `json:"host"`
	Started   time.Time           `json:"started"`
	Finished  time.Time           `json:"finished"`
	Targets   []DrillTargetReport `json:"targets"`
	Errors    []*StageError       `json:"errors,omitempty"`
	Cancelled bool                `json:"cancelled,omitempty"`
	Requests  backend.Counts      `json:"requests"`
}

// OK reports whether every drill passed.
func (d *DrillReport) OK() bool {
	if d.Cancelled || len(d.Errors) > 0 {
		return false
	}
	for _, t := range d.Targets {
		if !t.Passed {
			return false
		}
	}
	return true
}

// RunDrill drills every discovered container one after the other, records
// the outcomes in the metrics and alerts for each failure.
func (s *Service) RunDrill(ctx context.Context) *DrillReport {
	s.init()
	log := s.Logger
	rep := &DrillReport{Host: s.Config.Host, Started: s.Now().UTC(), Targets: []DrillTargetReport{}}
	defer func() {
		rep.Finished = s.Now().UTC()
		rep.Cancelled = ctx.Err() != nil
	}()
	fail := func(stage string, err error) {
		rep.Errors = append(rep.Errors, &StageError{Stage: stage, Err: err})
		log.Error("drill run failed", "stage", stage, "error", err)
		if ctx.Err() == nil {
			_ = s.alerter.Notify(ctx, Event{Kind: EventDrillFailure, Host: s.Config.Host, Stage: stage, Error: err.Error(), Time: s.Now().UTC()})
		}
	}
	if s.Drill == nil {
		fail("drill", errors.New("no drill function is wired"))
		return rep
	}
	log.Info("restore drill starting")
	r, closeRepo, err := s.open(ctx)
	if err != nil {
		fail("open", err)
		return rep
	}
	defer closeRepo()
	counting := CountingOf(r.Backend())
	var before backend.Counts
	if counting != nil {
		before = counting.Snapshot()
		defer func() {
			rep.Requests = countsDelta(before, counting.Snapshot())
			if s.Metrics != nil {
				s.Metrics.AddRequests(rep.Requests)
			}
		}()
	}
	targets, err := s.Discoverer.Discover(ctx)
	if err != nil {
		fail("discover", err)
		return rep
	}
	for _, t := range targets {
		if ctx.Err() != nil {
			break
		}
		tr := DrillTargetReport{Name: t.Name, Started: s.Now().UTC()}
		t0 := time.Now()
		res, err := runDrill(ctx, r, t, s.Drill)
		tr.Duration = time.Since(t0)
		tr.Snapshot = res.Snapshot
		if !res.RecordID.IsNull() {
			tr.RecordID = res.RecordID.String()
		}
		if err != nil {
			tr.Error = err.Error()
			log.Error("drill failed", "container", t.Name, "snapshot", short(res.Snapshot), "error", err)
		} else {
			tr.Passed = true
			log.Info("drill passed", "container", t.Name, "snapshot", short(res.Snapshot), "duration", tr.Duration.Round(time.Millisecond).String())
		}
		if ctx.Err() != nil && err != nil {
			break // shutting down: not a verdict on the backup
		}
		rep.Targets = append(rep.Targets, tr)
		if s.Metrics != nil {
			s.Metrics.ObserveDrill(t.Name, tr.Passed, s.Now())
		}
		if err != nil {
			_ = s.alerter.Notify(ctx, DrillEvent(s.Config.Host, t.Name, res, err, s.Now().UTC()))
		}
	}
	return rep
}

func runDrill(ctx context.Context, r *repo.Repository, t Target, fn DrillFunc) (res DrillResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("drill of %s panicked: %v", t.Name, p)
		}
	}()
	return fn(ctx, r, t)
}
