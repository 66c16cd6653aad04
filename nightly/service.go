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
	exp      *expectation

	mu      sync.Mutex
	alerted map[string]time.Time // stale containers already alerted, and when
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
		// One expected set for the alerts and the metrics' /healthz.
		if s.Metrics != nil {
			s.exp = s.Metrics.exp
		} else {
			s.exp = newExpectation()
		}
		s.alerted = map[string]time.Time{}
	})
}

// RequestsError is an error that carries the storage requests the failed
// operation made: an Open that fails returns one (see WithRequests), so the
// pass report shows what a failed open cost.
type RequestsError struct {
	Err      error
	Requests backend.Counts
}

func (e *RequestsError) Error() string { return e.Err.Error() }
func (e *RequestsError) Unwrap() error { return e.Err }

// WithRequests attaches the requests c to err (nil stays nil).
func WithRequests(err error, c backend.Counts) error {
	if err == nil {
		return nil
	}
	return &RequestsError{Err: err, Requests: c}
}

func (s *Service) open(ctx context.Context) (*repo.Repository, func(), error) {
	if s.Open == nil {
		return nil, nil, errors.New("nightly: Service.Open is not set")
	}
	r, err := s.Open(ctx)
	if err != nil {
		return nil, nil, err
	}
	return r, func() { _ = r.Close() }, nil
}

// RunPass runs one pass end to end: healthcheck start ping, open, Pass,
// close, metrics, alerts (failures or success, then the dead-man check over
// the expected set). It never returns nil.
func (s *Service) RunPass(ctx context.Context) *Report {
	s.init()
	log := s.Logger
	log.Info("backup pass starting", "host", s.Config.Host)
	if s.Metrics != nil {
		s.Metrics.SetPassRunning(true)
		defer s.Metrics.SetPassRunning(false)
	}
	_ = s.alerter.PassStarted(ctx)

	var rep *Report
	start, started := time.Now(), s.Now().UTC()
	r, closeRepo, err := s.open(ctx)
	if err != nil {
		rep = &Report{Host: s.Config.Host, Started: started, Finished: s.Now().UTC(), Duration: time.Since(start),
			Targets: []TargetReport{}, Inventory: []ContainerState{}}
		var re *RequestsError
		if errors.As(err, &re) {
			rep.Requests = re.Requests
		}
		rep.fail("open", err)
		rep.Cancelled = ctx.Err() != nil
		log.Error("opening the repository failed", "error", err, "duration", rep.Duration.Round(time.Millisecond).String(),
			"requests", rep.Requests.String())
		if s.Metrics != nil && !rep.Cancelled {
			s.Metrics.ObserveCheck(CheckRepository, err, s.Now())
		}
	} else {
		o := s.Config.PassOptions()
		o.Discoverer, o.Backup, o.Now, o.Logger = s.Discoverer, s.Backup, s.Now, log
		if s.Tune != nil {
			s.Tune(&o)
		}
		rep = Pass(ctx, r, o)
		closeRepo()
		// The pass's own time includes opening the repository.
		rep.Started = started
		rep.Duration = time.Since(start)
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

	if !discoveryFailed(rep) {
		s.exp.setDiscovered(discoveredNames(rep), s.Now())
	}
	if len(rep.Inventory) > 0 || !discoveryFailed(rep) {
		s.exp.setInventory(rep.Inventory)
	}
	s.CheckStale(ctx)
	return rep
}

// Check checks what a pass needs and loads the state a fresh start lacks:
// the repository (open with the password, load the index, list the
// snapshots: this host's newest backup, drill and retirement per container,
// for the metrics and the dead-man check) and discovery (the Docker engine
// answers; the containers found now). Each outcome goes to the metrics as
// the repository and docker checks; the error joins both failures. The
// daemon runs it at start, retrying until it works, and then periodically.
func (s *Service) Check(ctx context.Context) error {
	s.init()
	var errs []error
	repoErr := func() error {
		r, closeRepo, err := s.open(ctx)
		if err != nil {
			return err
		}
		defer closeRepo()
		if _, err := r.Index(ctx); err != nil {
			return fmt.Errorf("load the index: %w", err)
		}
		snaps, err := r.ListSnapshots(ctx)
		if err != nil {
			return err
		}
		inv := Inventory(snaps, s.Config.Host)
		s.exp.setInventory(inv)
		if s.Metrics != nil {
			s.Metrics.ObserveInventory(inv, nil)
		}
		return nil
	}()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s.Metrics != nil {
		s.Metrics.ObserveCheck(CheckRepository, repoErr, s.Now())
	}
	if repoErr != nil {
		errs = append(errs, fmt.Errorf("%s: %w", CheckRepository, repoErr))
	}
	if s.Discoverer != nil {
		targets, err := s.Discoverer.Discover(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			s.exp.setDiscovered(targetNames(targets), s.Now())
		}
		if s.Metrics != nil {
			s.Metrics.ObserveCheck(CheckDocker, err, s.Now())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", CheckDocker, err))
		}
	}
	return errors.Join(errs...)
}

// Refresh is Check (its old name).
func (s *Service) Refresh(ctx context.Context) error { return s.Check(ctx) }

// CheckStale runs the dead-man check over the expected set (see
// CheckStale, the function): it alerts once for each container that became
// stale, again every Config.StaleReminder while it stays stale (never when
// that is 0), and again when it becomes stale after a fresh backup; it
// returns every stale one. A container without any backup counts as stale
// once the threshold has passed since this Service first discovered it.
func (s *Service) CheckStale(ctx context.Context) []StaleAlert {
	s.init()
	now := s.Now()
	stale := s.exp.stale(now, s.staleAfter())
	var fresh []StaleAlert
	s.mu.Lock()
	alerted := map[string]time.Time{}
	for _, a := range stale {
		last, seen := s.alerted[a.Container]
		switch {
		case !seen:
			alerted[a.Container] = now
			fresh = append(fresh, a)
		case s.Config.StaleReminder > 0 && now.Sub(last) >= s.Config.StaleReminder:
			alerted[a.Container] = now
			a.Reminder = true
			fresh = append(fresh, a)
		default:
			alerted[a.Container] = last
		}
	}
	for name := range s.alerted {
		if _, still := alerted[name]; !still {
			s.Logger.Info("dead-man check: backup is fresh again", "container", name)
		}
	}
	s.alerted = alerted
	s.mu.Unlock()
	for _, a := range fresh {
		msg := "dead-man check: backup is stale"
		if a.Reminder {
			msg = "dead-man check: backup is still stale (reminder)"
		}
		s.Logger.Warn(msg, "container", a.Container, "detail", a.String())
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
	if s.Metrics != nil {
		s.Metrics.SetDrillRunning(true)
		defer s.Metrics.SetDrillRunning(false)
	}
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
