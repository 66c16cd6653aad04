package nightly

import (
	"log/slog"
	"path"
	"sync"
	"time"
)

// ProgressLog puts a running backup's progress into the log: one "backup
// progress" line every interval, from the start of the backup until Stop.
// A line is logged on every tick even when nothing moved, so a dump that
// hangs shows as the same byte count again and again rather than as
// silence, which an operator cannot tell from a slow log shipper.
type ProgressLog struct {
	log       *slog.Logger
	container string
	start     time.Time

	mu    sync.Mutex
	file  string
	read  uint64
	added uint64

	stop chan struct{}
	done chan struct{}
}

// StartProgressLog starts the progress lines of container's backup. With
// every <= 0 it returns nil, and a nil *ProgressLog accepts every call.
func StartProgressLog(log *slog.Logger, container string, every time.Duration) *ProgressLog {
	if every <= 0 || log == nil {
		return nil
	}
	p := &ProgressLog{log: log, container: container, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop(every)
	return p
}

func (p *ProgressLog) loop(every time.Duration) {
	defer close(p.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.emit()
		case <-p.stop:
			return
		}
	}
}

func (p *ProgressLog) emit() {
	p.mu.Lock()
	file, read, added := p.file, p.read, p.added
	p.mu.Unlock()
	el := time.Since(p.start)
	rate := 0.0
	if s := el.Seconds(); s > 0 {
		rate = float64(read) / s
	}
	p.log.Info("backup progress", "container", p.container, "file", file,
		"total_bytes_processed", read, "data_added", added,
		"elapsed", el.Round(time.Second).String(), "bytes_per_second", uint64(rate))
}

// Update records how far the backup is: the file being read (its base
// name is logged), the bytes read over all files so far, and the bytes
// the repository grew by.
func (p *ProgressLog) Update(file string, totalRead, added uint64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	if file != "" {
		p.file = path.Base(file)
	}
	p.read, p.added = totalRead, added
	p.mu.Unlock()
}

// Stop ends the lines; it returns once no more will be logged.
func (p *ProgressLog) Stop() {
	if p == nil {
		return
	}
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}
