package nightly

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
)

// Daemon runs a Service's passes and drills on cron schedules in UTC.
//
//   - One job at a time: a pass that comes due while the previous pass still
//     runs is skipped (and logged); passes and drills wait for each other.
//   - When ctx ends, no new job starts; a running one gets ShutdownGrace to
//     finish, then its context is cancelled: the repository's backup,
//     forget and prune remove their locks as they return, so an abandoned
//     pass leaves no lock behind (and no snapshot: data it uploaded is
//     unreferenced until the next prune). Run returns after the job did.
//   - At start it checks the repository (open, password, index, snapshots)
//     and the Docker engine (Service.Check), in the background, retrying
//     with backoff (from a second, doubling, up to StaleCheckEvery) until
//     both work; until then /healthz is 503 saying why. The repository's
//     history fills the per-container metrics and the expected set.
//   - Every StaleCheckEvery it checks both again and runs the dead-man
//     check on the expected set, so a container whose backups stop is
//     reported even without a pass.
//   - With Config.MetricsAddr set and Metrics present, /metrics and /healthz
//     are served there for the daemon's life.
type Daemon struct {
	Service *Service
	// Schedule and DrillSchedule override the Service's Config ones when
	// set; a DrillSchedule of "off" disables drills.
	Schedule, DrillSchedule string
	// ShutdownGrace is how long a running job may go on after ctx ends
	// (0: cancel it at once).
	ShutdownGrace time.Duration
	// StaleCheckEvery is the period of the checks and the dead-man check
	// (0: Config.CheckInterval, else one hour).
	StaleCheckEvery time.Duration
	// CheckTimeout bounds one check (0: two minutes): storage that does not
	// answer fails the check then, and the next one is tried.
	CheckTimeout time.Duration
	// RunNow runs a pass right at the start, before the schedule's first.
	RunNow bool
	// NoRefresh skips the checks (and so loading the repository's state):
	// only the dead-man check runs periodically.
	NoRefresh bool
	// AfterPass and AfterDrill, when set, get each finished job's report.
	AfterPass  func(*Report)
	AfterDrill func(*DrillReport)
	// Listening, when set, gets the metrics listener's address.
	Listening func(net.Addr)

	passRunning  atomic.Bool
	drillRunning atomic.Bool
	skipped      atomic.Int64
}

// Skipped returns how many passes were skipped because one was running.
func (d *Daemon) Skipped() int64 { return d.skipped.Load() }

// Run runs until ctx ends; it returns nil after a clean stop, or an error
// when it cannot start (a bad schedule, the metrics address taken).
func (d *Daemon) Run(ctx context.Context) error {
	s := d.Service
	if s == nil {
		return errors.New("nightly: Daemon.Service is not set")
	}
	s.init()
	log := s.Logger

	spec := d.Schedule
	if spec == "" {
		spec = s.Config.Schedule
	}
	if spec == "" {
		spec = DefaultSchedule
	}
	passSched, err := ParseSchedule(spec)
	if err != nil {
		return fmt.Errorf("schedule %q: %w", spec, err)
	}
	drillSpec := d.DrillSchedule
	if drillSpec == "" {
		drillSpec = s.Config.DrillSchedule
	}
	if isOff(drillSpec) {
		drillSpec = ""
	}
	var drillSched cron.Schedule
	if drillSpec != "" {
		if s.Drill == nil {
			log.Warn("no drill function is wired: the drill schedule is ignored")
		} else if drillSched, err = ParseSchedule(drillSpec); err != nil {
			return fmt.Errorf("drill schedule %q: %w", drillSpec, err)
		}
	}

	if s.Config.MetricsAddr != "" && s.Metrics != nil {
		ln, err := net.Listen("tcp", s.Config.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics address: %w", err)
		}
		if d.Listening != nil {
			d.Listening(ln.Addr())
		}
		srv := &http.Server{Handler: s.Metrics.Handler(), ReadHeaderTimeout: 10 * time.Second}
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "error", err)
			}
		}()
		log.Info("serving /metrics and /healthz", "addr", ln.Addr().String())
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			<-served
		}()
	}

	every := d.StaleCheckEvery
	if every <= 0 {
		every = s.Config.CheckInterval
	}
	if every <= 0 {
		every = DefaultCheckInterval
	}
	if s.Metrics != nil && !d.NoRefresh {
		s.Metrics.ExpectChecks(CheckRepository)
		if s.Discoverer != nil {
			s.Metrics.ExpectChecks(CheckDocker)
		}
	}

	// Jobs run under their own context, cancelled only after the grace.
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	sem := make(chan struct{}, 1)
	var jobs sync.WaitGroup // the RunNow pass; cron waits for its own jobs
	stopping := atomic.Bool{}

	acquire := func() bool {
		select {
		case sem <- struct{}{}:
			return true
		case <-jobCtx.Done():
			return false
		}
	}
	setNext := func() {
		if s.Metrics == nil {
			return
		}
		now := time.Now()
		s.Metrics.SetNextPass(passSched.Next(now))
		if drillSched != nil {
			s.Metrics.SetNextDrill(drillSched.Next(now))
		}
	}
	passJob := func() {
		setNext()
		if stopping.Load() {
			return
		}
		if !d.passRunning.CompareAndSwap(false, true) {
			d.skipped.Add(1)
			log.Warn("pass skipped: the previous pass is still running")
			return
		}
		defer d.passRunning.Store(false)
		if !acquire() {
			return
		}
		defer func() { <-sem }()
		rep := s.RunPass(jobCtx)
		if d.AfterPass != nil {
			d.AfterPass(rep)
		}
	}
	drillJob := func() {
		setNext()
		if stopping.Load() {
			return
		}
		if !d.drillRunning.CompareAndSwap(false, true) {
			log.Warn("drill skipped: the previous drill is still running")
			return
		}
		defer d.drillRunning.Store(false)
		if !acquire() {
			return
		}
		defer func() { <-sem }()
		rep := s.RunDrill(jobCtx)
		if d.AfterDrill != nil {
			d.AfterDrill(rep)
		}
	}

	c := cron.New(cron.WithLocation(time.UTC), cron.WithLogger(cronLogger{log}))
	c.Schedule(passSched, cron.FuncJob(passJob))
	if drillSched != nil {
		c.Schedule(drillSched, cron.FuncJob(drillJob))
	}
	c.Start()
	setNext()
	now := time.Now().UTC()
	attrs := []any{"schedule", spec, "next_pass", passSched.Next(now).Format(time.RFC3339)}
	if drillSched != nil {
		attrs = append(attrs, "drill_schedule", drillSpec, "next_drill", drillSched.Next(now).Format(time.RFC3339))
	}
	log.Info("daemon started", attrs...)
	if d.RunNow {
		jobs.Add(1)
		go func() {
			defer jobs.Done()
			passJob()
		}()
	}

	// The checks: at once, then every period; after a failure, again
	// sooner with backoff.
	checkTimeout := d.CheckTimeout
	if checkTimeout <= 0 {
		checkTimeout = 2 * time.Minute
	}
	backoff := time.Second
	wait := time.Duration(0)
	healthy := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	if d.NoRefresh {
		wait = every
		timer.Reset(wait)
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-timer.C:
		}
		if d.NoRefresh {
			s.CheckStale(ctx)
			timer.Reset(every)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		err := s.Check(cctx)
		cancel()
		if ctx.Err() != nil {
			break loop
		}
		if err != nil {
			wait = min(backoff, every)
			backoff = min(2*backoff, every)
			log.Error("check failed: retrying", "error", err, "retry_in", wait.String())
			healthy = false
		} else {
			if !healthy {
				log.Info("check passed: repository and Docker engine work")
			}
			healthy = true
			wait, backoff = every, time.Second
		}
		// The dead-man check runs on whatever is known, even when the
		// check failed in part (say Docker is down but the repository's
		// history was read).
		s.CheckStale(ctx)
		timer.Reset(wait)
	}

	stopping.Store(true)
	cronDone := c.Stop()
	busy := d.passRunning.Load() || d.drillRunning.Load()
	log.Info("daemon stopping", "job_running", busy)
	finished := make(chan struct{})
	go func() {
		<-cronDone.Done()
		jobs.Wait()
		close(finished)
	}()
	if busy && d.ShutdownGrace > 0 {
		select {
		case <-finished:
		case <-time.After(d.ShutdownGrace):
			log.Warn("the running job did not finish within the shutdown grace: abandoning it", "grace", d.ShutdownGrace.String())
		}
	}
	cancelJobs()
	<-finished
	log.Info("daemon stopped")
	return nil
}

// cronLogger sends robfig/cron's messages to slog at debug level (errors at
// error level).
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) {
	c.l.Debug("cron: "+msg, sanitizeKV(kv)...)
}

func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append([]any{"error", err}, sanitizeKV(kv)...)...)
}

// sanitizeKV turns robfig's time values into strings (they log fine either
// way; this keeps the JSON compact).
func sanitizeKV(kv []any) []any {
	out := make([]any, len(kv))
	for i, v := range kv {
		if t, ok := v.(time.Time); ok {
			out[i] = t.UTC().Format(time.RFC3339)
			continue
		}
		out[i] = v
	}
	return out
}

// NewLogger returns a slog logger writing to w: JSON, or text when format
// is "text", or for "auto" when terminal is true.
func NewLogger(w io.Writer, format string, terminal bool, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" || (format == "auto" && terminal) || (format == "" && terminal) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
