package backend_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// fast keeps the tests quick: waits of a few milliseconds.
var fast = backend.RetryOptions{InitialDelay: time.Millisecond, MaxDelay: 4 * time.Millisecond}

var errTransient = errors.New("503 ServiceUnavailable (test)")

func idOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func packHandle(data []byte) backend.Handle {
	return backend.Handle{Type: backend.PackFile, Name: idOf(data)}
}

// reports records Report calls.
type reports struct {
	mu    sync.Mutex
	calls []string
}

func (r *reports) report(op string, h backend.Handle, attempt int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("%s %v #%d: %v", op, h, attempt, err))
}

func (r *reports) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// failFirst returns a mem hook that fails the first n calls of op.
func failFirst(op mem.Op, n int, err error) (mem.Hook, *atomic.Int64) {
	var calls atomic.Int64
	return func(o mem.Op, h backend.Handle) error {
		if o != op {
			return nil
		}
		if calls.Add(1) <= int64(n) {
			return err
		}
		return nil
	}, &calls
}

func TestRetryContract(t *testing.T) {
	backendtest.RunContract(t, func(t *testing.T) backend.Backend {
		return backend.NewRetry(backend.NewCounting(mem.New()), fast)
	})
}

func TestRetryTransientThenSuccess(t *testing.T) {
	m := mem.New()
	hook, calls := failFirst(mem.OpSave, 2, errTransient)
	m.SetHook(hook)
	c := backend.NewCounting(m)
	var rep reports
	opts := fast
	opts.Report = func(op string, h backend.Handle, attempt int, err error) {
		rep.report(op, h, attempt, err)
		c.ReportRetry(op, h, attempt, err)
	}
	be := backend.NewRetry(c, opts)

	data := []byte("pack bytes")
	h := packHandle(data)
	if err := be.Save(context.Background(), h, backend.BytesSource(data)); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if calls.Load() != 3 {
		t.Errorf("backend saw %d saves, want 3", calls.Load())
	}
	if rep.n() != 2 {
		t.Errorf("Report called %d times, want 2: %q", rep.n(), rep.calls)
	} else if !strings.HasPrefix(rep.calls[0], "save data/") || !strings.Contains(rep.calls[1], "#2") {
		t.Errorf("Report calls: %q", rep.calls)
	}
	got, ok := m.Get(h)
	if !ok || !bytes.Equal(got, data) {
		t.Errorf("stored %q, want %q", got, data)
	}
	cnt := c.Snapshot()
	if cnt.Saves != 3 || cnt.Retries != 2 || cnt.Errors != 2 {
		t.Errorf("counts %+v: want 3 saves, 2 retries, 2 errors", cnt)
	}
}

func TestRetryPermanentNotRetried(t *testing.T) {
	perm := backend.Permanent(errors.New("403 AccessDenied (test)"))
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"permanent", perm},
		{"not exist", fmt.Errorf("gone: %w", backend.ErrNotExist)},
		{"exists", fmt.Errorf("save: %w", fs.ErrExist)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mem.New()
			hook, calls := failFirst(mem.OpSave, 100, tc.err)
			m.SetHook(hook)
			var rep reports
			opts := fast
			opts.Report = rep.report
			be := backend.NewRetry(m, opts)
			data := []byte("x")
			err := be.Save(context.Background(), packHandle(data), backend.BytesSource(data))
			if err != tc.err {
				t.Errorf("Save returned %v, want the backend's error unchanged", err)
			}
			if calls.Load() != 1 || rep.n() != 0 {
				t.Errorf("%d attempts, %d reports; want 1 and 0", calls.Load(), rep.n())
			}
		})
	}
}

func TestRetryGivesUpAfterMaxAttempts(t *testing.T) {
	m := mem.New()
	last := fmt.Errorf("HTTP 503: %w", errTransient)
	hook, calls := failFirst(mem.OpStat, 1000, last)
	m.SetHook(hook)
	opts := fast
	opts.MaxAttempts = 4
	be := backend.NewRetry(m, opts)
	h := backend.Handle{Type: backend.IndexFile, Name: idOf([]byte("i"))}
	_, err := be.Stat(context.Background(), h)
	if err == nil {
		t.Fatal("Stat: no error")
	}
	if calls.Load() != 4 {
		t.Errorf("%d attempts, want 4", calls.Load())
	}
	if !errors.Is(err, errTransient) {
		t.Errorf("error %q does not wrap the last error", err)
	}
	for _, want := range []string{"stat", h.String(), "4 attempts", "HTTP 503"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestRetryGivesUpAfterMaxElapsed(t *testing.T) {
	m := mem.New()
	hook, calls := failFirst(mem.OpLoad, 1<<30, errTransient)
	m.SetHook(hook)
	be := backend.NewRetry(m, backend.RetryOptions{
		MaxAttempts:  1000,
		MaxElapsed:   150 * time.Millisecond,
		InitialDelay: 10 * time.Millisecond,
		MaxDelay:     20 * time.Millisecond,
	})
	start := time.Now()
	_, err := be.Load(context.Background(), packHandle([]byte("p")), 0, 0)
	took := time.Since(start)
	if !errors.Is(err, errTransient) {
		t.Fatalf("Load: %v", err)
	}
	if took > time.Second {
		t.Errorf("gave up after %v, want about 150ms", took)
	}
	if n := calls.Load(); n < 3 || n > 40 {
		t.Errorf("%d attempts in %v", n, took)
	}
}

func TestRetryContextCancelledWhileWaiting(t *testing.T) {
	m := mem.New()
	hook, _ := failFirst(mem.OpRemove, 1<<30, errTransient)
	m.SetHook(hook)
	be := backend.NewRetry(m, backend.RetryOptions{InitialDelay: time.Hour, MaxDelay: time.Hour, MaxElapsed: 10 * time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	err := be.Remove(ctx, packHandle([]byte("r")))
	if time.Since(start) > 5*time.Second {
		t.Errorf("Remove took %v after cancellation", time.Since(start))
	}
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errTransient) {
		t.Errorf("Remove returned %v, want context.Canceled and the last error in the chain", err)
	}
}

// partialSaver reads part of the source and fails, fails times, then stores
// what it reads without rewinding, so only Retry's rewind makes the data
// whole.
type partialSaver struct {
	*mem.Backend
	fails int
}

func (p *partialSaver) Save(ctx context.Context, h backend.Handle, src backend.Source) error {
	if p.fails > 0 {
		p.fails--
		_, _ = io.ReadFull(src, make([]byte, 3))
		return errTransient
	}
	data, err := io.ReadAll(src)
	if err != nil {
		return err
	}
	return p.Backend.Save(ctx, h, backend.BytesSource(data))
}

func TestRetrySaveRewinds(t *testing.T) {
	m := mem.New()
	be := backend.NewRetry(&partialSaver{Backend: m, fails: 2}, fast)
	data := []byte("0123456789abcdef")
	h := packHandle(data)
	if err := be.Save(context.Background(), h, backend.BytesSource(data)); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Get(h); !bytes.Equal(got, data) {
		t.Errorf("stored %q, want %q", got, data)
	}
}

// cutLoader's readers fail after cut bytes, the first fails times.
type cutLoader struct {
	*mem.Backend
	cut   int
	fails atomic.Int64
	opens []string
	mu    sync.Mutex
}

func (c *cutLoader) Load(ctx context.Context, h backend.Handle, length int, offset int64) (io.ReadCloser, error) {
	c.mu.Lock()
	c.opens = append(c.opens, fmt.Sprintf("%d+%d", offset, length))
	c.mu.Unlock()
	rc, err := c.Backend.Load(ctx, h, length, offset)
	if err != nil {
		return nil, err
	}
	rest := int64(length)
	if fi, _ := c.Backend.Stat(ctx, h); length == 0 {
		rest = fi.Size - offset
	}
	if rest <= int64(c.cut) || c.fails.Add(-1) < 0 {
		return rc, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, int64(c.cut)), errReader{io.ErrUnexpectedEOF}), rc}, nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestRetryLoadResumes(t *testing.T) {
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	h := packHandle(data)
	for _, tc := range []struct {
		length    int
		offset    int64
		wantOpens []string
	}{
		{0, 0, []string{"0+0", "1000+0", "2000+0", "3000+0"}},
		{5000, 2500, []string{"2500+5000", "3500+4000", "4500+3000", "5500+2000"}},
		{0, 9500, []string{"9500+0"}}, // shorter than the cut
	} {
		t.Run(fmt.Sprintf("%d+%d", tc.offset, tc.length), func(t *testing.T) {
			m := mem.New()
			m.Put(h, data)
			cl := &cutLoader{Backend: m, cut: 1000}
			cl.fails.Store(3)
			c := backend.NewCounting(cl)
			var rep reports
			opts := fast
			opts.Report = rep.report
			be := backend.NewRetry(c, opts)
			rd, err := be.Load(context.Background(), h, tc.length, tc.offset)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rd)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := rd.Close(); err != nil {
				t.Error(err)
			}
			end := int64(len(data))
			if tc.length > 0 {
				end = tc.offset + int64(tc.length)
			}
			if !bytes.Equal(got, data[tc.offset:end]) {
				t.Errorf("got %d bytes, want %d (content differs)", len(got), end-tc.offset)
			}
			if fmt.Sprint(cl.opens) != fmt.Sprint(tc.wantOpens) {
				t.Errorf("opens %v, want %v", cl.opens, tc.wantOpens)
			}
			if rep.n() != len(tc.wantOpens)-1 {
				t.Errorf("%d reports for %d opens", rep.n(), len(tc.wantOpens))
			}
			if cnt := c.Snapshot(); cnt.Loads != int64(len(tc.wantOpens)) || cnt.BytesDown != end-tc.offset {
				t.Errorf("counts %+v", cnt)
			}
		})
	}
}

func TestRetryLoadResumeBounded(t *testing.T) {
	data := make([]byte, 100000)
	h := packHandle(data)
	m := mem.New()
	m.Put(h, data)
	cl := &cutLoader{Backend: m, cut: 10}
	cl.fails.Store(1 << 30)
	opts := fast
	opts.MaxAttempts = 5
	be := backend.NewRetry(cl, opts)
	rd, err := be.Load(context.Background(), h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rd)
	rd.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read error %v, want io.ErrUnexpectedEOF in the chain", err)
	}
	if len(got) != 50 || len(cl.opens) != 5 {
		t.Errorf("read %d bytes in %d opens, want 50 in 5", len(got), len(cl.opens))
	}
	if !strings.Contains(err.Error(), "5 attempts") || !strings.Contains(err.Error(), h.String()) {
		t.Errorf("error %q should name the file and the attempts", err)
	}
}

// flakyLister fails its first List after reporting two files.
type flakyLister struct {
	*mem.Backend
	failed bool
	calls  int
}

func (f *flakyLister) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	f.calls++
	n := 0
	return f.Backend.List(ctx, t, func(fi backend.FileInfo) error {
		if n == 2 && !f.failed {
			f.failed = true
			return errTransient
		}
		n++
		return fn(fi)
	})
}

func TestRetryListSkipsSeen(t *testing.T) {
	m := mem.New()
	want := map[string]bool{}
	for i := 0; i < 5; i++ {
		d := []byte{byte(i)}
		m.Put(backend.Handle{Type: backend.SnapshotFile, Name: idOf(d)}, d)
		want[idOf(d)] = true
	}
	fl := &flakyLister{Backend: m}
	be := backend.NewRetry(fl, fast)
	seen := map[string]int{}
	err := be.List(context.Background(), backend.SnapshotFile, func(fi backend.FileInfo) error {
		seen[fi.Name]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fl.calls != 2 {
		t.Errorf("%d List calls, want 2", fl.calls)
	}
	for name := range want {
		if seen[name] != 1 {
			t.Errorf("%s reported %d times", name[:8], seen[name])
		}
	}
}

func TestRetryListCallbackErrorNotRetried(t *testing.T) {
	m := mem.New()
	m.Put(backend.Handle{Type: backend.LockFile, Name: idOf([]byte("l"))}, []byte("l"))
	fl := &flakyLister{Backend: m, failed: true}
	be := backend.NewRetry(fl, fast)
	stop := errors.New("stop")
	err := be.List(context.Background(), backend.LockFile, func(backend.FileInfo) error { return stop })
	if err != stop || fl.calls != 1 {
		t.Errorf("List returned %v after %d calls, want the callback's error after 1", err, fl.calls)
	}
}

// lostRemove deletes the file but reports a failure, once.
type lostRemove struct {
	*mem.Backend
	lost bool
}

func (l *lostRemove) Remove(ctx context.Context, h backend.Handle) error {
	err := l.Backend.Remove(ctx, h)
	if err == nil && !l.lost {
		l.lost = true
		return errTransient
	}
	return err
}

func TestRetryRemoveAfterLostAnswer(t *testing.T) {
	m := mem.New()
	h := packHandle([]byte("x"))
	m.Put(h, []byte("x"))
	be := backend.NewRetry(&lostRemove{Backend: m}, fast)
	if err := be.Remove(context.Background(), h); err != nil {
		t.Errorf("Remove whose first answer was lost: %v", err)
	}
	if err := be.Remove(context.Background(), h); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("Remove of a missing file: %v, want ErrNotExist", err)
	}
}

func TestRetryCreate(t *testing.T) {
	var calls int
	c := &creator{Backend: mem.New(), fn: func() error {
		calls++
		if calls < 3 {
			return errTransient
		}
		return nil
	}}
	be := backend.NewRetry(c, fast)
	if err := be.(backend.Creator).Create(context.Background()); err != nil || calls != 3 {
		t.Errorf("Create: %v after %d calls", err, calls)
	}
	// A backend that needs no preparation.
	if err := backend.NewRetry(mem.New(), fast).(backend.Creator).Create(context.Background()); err != nil {
		t.Error(err)
	}
}

type creator struct {
	*mem.Backend
	fn func() error
}

func (c *creator) Create(context.Context) error { return c.fn() }

// Every retry is logged with its operation, file, attempt, wait and
// error, before the wait; the per-operation error counts below the retry
// add up.
func TestRetryLogEveryRetry(t *testing.T) {
	m := mem.New()
	hook, _ := failFirst(mem.OpSave, 3, errTransient)
	m.SetHook(hook)
	c := backend.NewCounting(m)
	var mu sync.Mutex
	var events []backend.RetryEvent
	var at []time.Time
	opts := backend.RetryOptions{InitialDelay: 20 * time.Millisecond, MaxDelay: 80 * time.Millisecond,
		Report: c.ReportRetry,
		Log: func(e backend.RetryEvent) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, e)
			at = append(at, time.Now())
		}}
	be := backend.NewRetry(c, opts)
	data := []byte("pack bytes")
	h := packHandle(data)
	start := time.Now()
	if err := be.Save(context.Background(), h, backend.BytesSource(data)); err != nil {
		t.Fatal(err)
	}
	if len(events) != 3 {
		t.Fatalf("%d retry events for 3 failures: %+v", len(events), events)
	}
	var waited time.Duration
	for i, e := range events {
		if e.Op != "save" || e.Handle != h || e.Attempt != i+1 || !errors.Is(e.Err, errTransient) || e.Delay <= 0 {
			t.Errorf("event %d: %+v", i, e)
		}
		if s := e.String(); !strings.Contains(s, "save data/") || !strings.Contains(s, fmt.Sprintf("(attempt %d)", i+1)) ||
			!strings.Contains(s, "retrying in") || !strings.Contains(s, "503") {
			t.Errorf("event %d text %q", i, s)
		}
		if i == 0 && at[0].Sub(start) > 15*time.Millisecond {
			t.Errorf("the first retry was logged %s after the failure began, want before its wait", at[0].Sub(start))
		}
		waited += e.Delay
	}
	if took := time.Since(start); took < waited {
		t.Errorf("took %s, less than the logged waits %s", took, waited)
	}
	cs := c.Snapshot()
	if cs.Saves != 4 || cs.SaveErrors != 3 || cs.Errors != 3 || cs.Retries != 3 || cs.LoadErrors != 0 {
		t.Errorf("counts %+v", cs)
	}
	if d := cs.Sub(backend.Counts{Saves: 1, SaveErrors: 1}); d.Saves != 3 || d.SaveErrors != 2 || d.Retries != 3 {
		t.Errorf("Sub: %+v", d)
	}
	if s := cs.Add(cs); s.Saves != 8 || s.SaveErrors != 6 {
		t.Errorf("Add: %+v", s)
	}
	if o := (backend.RetryEvent{Op: "list", Handle: backend.Handle{Type: backend.IndexFile}}).Object(); o != "index/" {
		t.Errorf("list object %q", o)
	}
	if o := (backend.RetryEvent{Op: "stat", Handle: backend.Handle{Type: backend.ConfigFile}}).Object(); o != "config" {
		t.Errorf("config object %q", o)
	}
}
