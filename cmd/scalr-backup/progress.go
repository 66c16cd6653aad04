package main

import (
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

// progress prints the status of long work on standard error as restic
// does: on a terminal one line redrawn in place (at most 60 times a
// second, or RESTIC_PROGRESS_FPS); without a terminal nothing, unless
// RESTIC_PROGRESS_FPS is set, then a plain line at that rate, so logs and
// CI get a heartbeat. Quiet and JSON output print none.
type progress struct {
	w        io.Writer
	terminal bool
	every    time.Duration

	mu    sync.Mutex
	last  time.Time
	shown bool
	line  string
}

// stderrTerminal reports whether standard error is a terminal.
func (a *app) stderrTerminal() bool {
	f, ok := a.stderr.(*os.File)
	return ok && isTerminalFd(f.Fd())
}

// progressFPS is RESTIC_PROGRESS_FPS (at most 60), or 0 when unset or not
// a positive number.
func (a *app) progressFPS() float64 {
	if v := a.getenv("RESTIC_PROGRESS_FPS"); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 {
			return min(n, 60)
		}
	}
	return 0
}

// logProgressEvery is how often run and daemon log a running backup's
// progress: at RESTIC_PROGRESS_FPS when set; else every 2 s when the log
// goes to a terminal, and every 30 s into a daemon's or cron's log, which
// is enough to see that a long dump moves without flooding it.
func (a *app) logProgressEvery() time.Duration {
	if fps := a.progressFPS(); fps > 0 {
		return time.Duration(float64(time.Second) / fps)
	}
	if a.stderrTerminal() {
		return 2 * time.Second
	}
	return 30 * time.Second
}

// newProgress returns nil when no progress is to be shown; a nil
// *progress accepts every call.
func (a *app) newProgress() *progress {
	if a.quiet || a.jsonOutput {
		return nil
	}
	terminal := a.stderrTerminal()
	fps := a.progressFPS()
	switch {
	case fps > 0:
	case terminal:
		fps = 60
	default:
		return nil
	}
	return &progress{w: a.stderr, terminal: terminal, every: time.Duration(float64(time.Second) / fps)}
}

// set shows line now if the last one was shown long enough ago; force
// shows it whatever the rate (a stage's first and last line).
func (p *progress) set(line string, force bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line = line
	now := time.Now()
	if !force && now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	p.print()
}

func (p *progress) print() {
	if p.terminal {
		fmt.Fprintf(p.w, "\r\x1b[2K%s", p.line)
	} else {
		fmt.Fprintln(p.w, p.line)
	}
	p.shown = true
}

// done ends the status line (a terminal's cursor goes to the next line).
func (p *progress) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal && p.shown {
		fmt.Fprintln(p.w)
	}
	p.shown = false
}

// clear removes the status line from a terminal (the next output starts
// on a clean line); without a terminal the printed lines stay.
func (p *progress) clear() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal && p.shown {
		fmt.Fprint(p.w, "\r\x1b[2K")
	}
	p.shown = false
}

// backupMeter shows a running backup on a progress (see newProgress):
// elapsed time, the file being read (for pg-backup, "container: file"),
// bytes read over all files, rate, bytes added. The line is redrawn on a
// timer, not only when a chunk is stored, so a dump that stalls shows its
// clock running. stop ends it and clears a terminal's line.
func (a *app) backupMeter(container string) (update func(repo.BackupProgress), stop func()) {
	p := a.newProgress()
	if p == nil {
		return func(repo.BackupProgress) {}, func() {}
	}
	var (
		mu   sync.Mutex
		last repo.BackupProgress
	)
	start := time.Now()
	render := func() string {
		mu.Lock()
		bp := last
		mu.Unlock()
		what := path.Base(bp.File)
		if bp.File == "" {
			what = "starting"
		}
		if container != "" {
			what = container + ": " + what
		}
		rate := uint64(float64(bp.TotalBytesRead) / max(time.Since(start).Seconds(), 0.001))
		return fmt.Sprintf("%s %s, %s read, %s/s, %s added", elapsed(start), what,
			bytesHuman(bp.TotalBytesRead), bytesHuman(rate), bytesHuman(bp.Stats.DataAdded))
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(p.every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.set(render(), true)
			case <-done:
				return
			}
		}
	}()
	update = func(bp repo.BackupProgress) {
		mu.Lock()
		last = bp
		mu.Unlock()
	}
	stop = func() {
		close(done)
		<-finished
		p.clear()
	}
	return update, stop
}

// elapsed is restic's [m:ss] prefix.
func elapsed(start time.Time) string {
	d := time.Since(start).Round(time.Second)
	return fmt.Sprintf("[%d:%02d]", int(d.Minutes()), int(d.Seconds())%60)
}

// percent is done of total as restic prints it: 45.63%.
func percent(done, total float64) string {
	if total <= 0 {
		return "  -.--%"
	}
	return fmt.Sprintf("%6.2f%%", 100*done/total)
}

// countingWriter counts what goes through it and reports to a progress.
type countingWriter struct {
	w     io.Writer
	n     int64
	total int64
	start time.Time
	p     *progress
	what  string
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.p.set(fmt.Sprintf("%s %s %s %s / %s", elapsed(c.start), percent(float64(c.n), float64(c.total)), c.what,
		bytesHuman(uint64(c.n)), bytesHuman(uint64(c.total))), false)
	return n, err
}
