package nightly

import (
	"cmp"
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

	sc, err := d.schedules()
	if err != nil {
		return err
	}
	if s.Config.MetricsAddr != "" && s.Metrics != nil {
		stop, err := d.serveMetrics()
		if err != nil {
			return err
		}
		defer stop()
	}
	every := cmp.Or(max(d.StaleCheckEvery, 0), max(s.Config.CheckInterval, 0), DefaultCheckInterval)
	if s.Metrics != nil && !d.NoRefresh {
		s.Metrics.ExpectChecks(CheckRepository)
		if s.Discoverer != nil {
			s.Metrics.ExpectChecks(CheckDocker)
		}
	}

	// Jobs run under their own context, cancelled only after the grace.
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	jr := &jobRunner{d: d, s: s, sc: sc, ctx: jobCtx, sem: make(chan struct{}, 1)}

	c := cron.New(cron.WithLocation(time.UTC), cron.WithLogger(cronLogger{log}))
	c.Schedule(sc.pass, cron.FuncJob(jr.passJob))
	if sc.drill != nil {
		c.Schedule(sc.drill, cron.FuncJob(jr.drillJob))
	}
	c.Start()
	jr.setNext()
	now := time.Now().UTC()
	attrs := []any{"schedule", sc.passSpec, "next_pass", sc.pass.Next(now).Format(time.RFC3339)}
	if sc.drill != nil {
		attrs = append(attrs, "drill_schedule", sc.drillSpec, "next_drill", sc.drill.Next(now).Format(time.RFC3339))
	}
	log.Info("daemon started", attrs...)
	if d.RunNow {
		jr.jobs.Add(1)
		go func() {
			defer jr.jobs.Done()
			jr.passJob()
		}()
	}

	d.checkLoop(ctx, every)

	jr.stopping.Store(true)
	d.shutdown(c.Stop(), jr, cancelJobs)
	return nil
}

// daemonSchedules are the daemon's parsed schedules (drill nil: none).
type daemonSchedules struct {
	passSpec, drillSpec string
	pass, drill         cron.Schedule
}

// schedules parses the pass and drill schedules: the Daemon's, else the
// Config's, else the defaults (no drill when "off" or unwired).
func (d *Daemon) schedules() (daemonSchedules, error) {
	s := d.Service
	var sc daemonSchedules
	sc.passSpec = cmp.Or(d.Schedule, s.Config.Schedule, DefaultSchedule)
	var err error
	if sc.pass, err = ParseSchedule(sc.passSpec); err != nil {
		return sc, fmt.Errorf("schedule %q: %w", sc.passSpec, err)
	}
	sc.drillSpec = cmp.Or(d.DrillSchedule, s.Config.DrillSchedule)
	if isOff(sc.drillSpec) {
		sc.drillSpec = ""
	}
	switch {
	case sc.drillSpec == "":
	case s.Drill == nil:
		s.Logger.Warn("no drill function is wired: the drill schedule is ignored")
	default:
		if sc.drill, err = ParseSchedule(sc.drillSpec); err != nil {
			return sc, fmt.Errorf("drill schedule %q: %w", sc.drillSpec, err)
		}
	}
	return sc, nil
}

// serveMetrics serves /metrics and /healthz on Config.MetricsAddr until
// the returned stop is called.
func (d *Daemon) serveMetrics() (stop func(), err error) {
	s := d.Service
	ln, err := net.Listen("tcp", s.Config.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics address: %w", err)
	}
	if d.Listening != nil {
		d.Listening(ln.Addr())
	}
	srv := &http.Server{Handler: s.Metrics.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.Logger.Error("metrics server stopped", "error", err)
		}
	}()
	s.Logger.Info("serving /metrics and /healthz", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}, nil
}

// jobRunner runs the daemon's passes and drills one at a time.
type jobRunner struct {
	d        *Daemon
	s        *Service
	sc       daemonSchedules
	ctx      context.Context // the jobs' own, cancelled after the grace
	sem      chan struct{}   // one job at a time
	jobs     sync.WaitGroup  // the RunNow pass; cron waits for its own jobs
	stopping atomic.Bool
}

func (jr *jobRunner) acquire() bool {
	select {
	case jr.sem <- struct{}{}:
		return true
	case <-jr.ctx.Done():
		return false
	}
}

func (jr *jobRunner) setNext() {
	if jr.s.Metrics == nil {
		return
	}
	now := time.Now()
	jr.s.Metrics.SetNextPass(jr.sc.pass.Next(now))
	if jr.sc.drill != nil {
		jr.s.Metrics.SetNextDrill(jr.sc.drill.Next(now))
	}
}

func (jr *jobRunner) passJob() {
	jr.setNext()
	if jr.stopping.Load() {
		return
	}
	if !jr.d.passRunning.CompareAndSwap(false, true) {
		jr.d.skipped.Add(1)
		jr.s.Logger.Warn("pass skipped: the previous pass is still running")
		return
	}
	defer jr.d.passRunning.Store(false)
	if !jr.acquire() {
		return
	}
	defer func() { <-jr.sem }()
	rep := jr.s.RunPass(jr.ctx)
	if jr.d.AfterPass != nil {
		jr.d.AfterPass(rep)
	}
}

func (jr *jobRunner) drillJob() {
	jr.setNext()
	if jr.stopping.Load() {
		return
	}
	if !jr.d.drillRunning.CompareAndSwap(false, true) {
		jr.s.Logger.Warn("drill skipped: the previous drill is still running")
		return
	}
	defer jr.d.drillRunning.Store(false)
	if !jr.acquire() {
		return
	}
	defer func() { <-jr.sem }()
	rep := jr.s.RunDrill(jr.ctx)
	if jr.d.AfterDrill != nil {
		jr.d.AfterDrill(rep)
	}
}

// checkLoop runs the checks until ctx ends: at once, then every period;
// after a failure, again sooner with backoff. Each round ends with the
// dead-man check. With NoRefresh only the dead-man check runs.
func (d *Daemon) checkLoop(ctx context.Context, every time.Duration) {
	s := d.Service
	checkTimeout := cmp.Or(max(d.CheckTimeout, 0), 2*time.Minute)
	backoff := time.Second
	wait := time.Duration(0)
	healthy := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	if d.NoRefresh {
		timer.Reset(every)
	}
	for {
		select {
		case <-ctx.Done():
			return
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
			return
		}
		if err != nil {
			wait = min(backoff, every)
			backoff = min(2*backoff, every)
			s.Logger.Error("check failed: retrying", "error", err, "retry_in", wait.String())
			healthy = false
		} else {
			if !healthy {
				s.Logger.Info("check passed: repository and Docker engine work")
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
}

// shutdown waits for cron's jobs and the RunNow pass, up to ShutdownGrace
// for a running one, then cancels the jobs' context and waits for them.
func (d *Daemon) shutdown(cronDone context.Context, jr *jobRunner, cancelJobs context.CancelFunc) {
	log := d.Service.Logger
	busy := d.passRunning.Load() || d.drillRunning.Load()
	log.Info("daemon stopping", "job_running", busy)
	finished := make(chan struct{})
	go func() {
		<-cronDone.Done()
		jr.jobs.Wait()
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
