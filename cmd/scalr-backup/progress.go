package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
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

// newProgress returns nil when no progress is to be shown; a nil
// *progress accepts every call.
func (a *app) newProgress() *progress {
	if a.quiet || a.jsonOutput {
		return nil
	}
	f, ok := a.stderr.(*os.File)
	terminal := ok && isTerminalFd(f.Fd())
	fps := 0.0
	if v := a.getenv("RESTIC_PROGRESS_FPS"); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 {
			fps = min(n, 60)
		}
	}
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
