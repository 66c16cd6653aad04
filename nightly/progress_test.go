package nightly

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// lockedBuffer is the logger's output, read while its goroutine writes.
type lockedBuffer struct{ testenv.LockedBuffer }

func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestProgressLog(t *testing.T) {
	var buf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	p := StartProgressLog(log, "scalr-app-db", 5*time.Millisecond)
	p.Update("scalr-app-db/app.pgdump", 3<<20, 1<<20)
	// Lines keep coming while nothing moves: a hang is not silence.
	deadline := time.Now().Add(10 * time.Second)
	for len(buf.lines(t)) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 progress lines in 10 s: %v", buf.lines(t))
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Stop()
	p.Stop() // twice is fine
	n := len(buf.lines(t))
	time.Sleep(30 * time.Millisecond)
	lines := buf.lines(t)
	if len(lines) != n {
		t.Errorf("%d lines after Stop", len(lines)-n)
	}
	last := lines[len(lines)-1]
	if last["msg"] != "backup progress" || last["container"] != "scalr-app-db" || last["file"] != "app.pgdump" ||
		last["total_bytes_processed"] != float64(3<<20) || last["data_added"] != float64(1<<20) || last["elapsed"] == nil {
		t.Errorf("line %v", last)
	}

	// Off: nil, and every call on it is a no-op.
	off := StartProgressLog(log, "x", 0)
	if off != nil {
		t.Fatal("interval 0 gives a ProgressLog")
	}
	off.Update("f", 1, 1)
	off.Stop()
}
