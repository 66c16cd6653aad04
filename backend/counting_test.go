package backend_test

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

func TestCountingContract(t *testing.T) {
	backendtest.RunContract(t, func(t *testing.T) backend.Backend {
		return backend.NewCounting(mem.New())
	})
}

func TestCountingCounts(t *testing.T) {
	ctx := context.Background()
	m := mem.New()
	c := backend.NewCounting(m)

	data := make([]byte, 1000)
	h := packHandle(data)
	if err := c.Save(ctx, h, backend.BytesSource(data)); err != nil {
		t.Fatal(err)
	}
	rd, err := c.Load(ctx, h, 100, 50)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, rd); err != nil {
		t.Fatal(err)
	}
	rd.Close()
	if _, err := c.Stat(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, packHandle([]byte("missing"))); err == nil {
		t.Fatal("Stat of a missing file: no error")
	}
	if err := c.List(ctx, backend.PackFile, func(backend.FileInfo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}

	want := backend.Counts{Saves: 1, Loads: 1, Stats: 2, Lists: 1, ListPages: 1, Removes: 1, Errors: 1, BytesUp: 1000, BytesDown: 100, StatErrors: 1}
	got := c.Snapshot()
	if got != want {
		t.Errorf("counts\n got %+v\nwant %+v", got, want)
	}
	if got.ClassA() != 2 || got.ClassB() != 3 {
		t.Errorf("class A %d, class B %d; want 2 and 3", got.ClassA(), got.ClassB())
	}

	js, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"saves":1,"loads":1,"stats":2,"lists":1,"list_pages":1,"removes":1,"retention_extends":0,"errors":1,"retries":0,"bytes_up":1000,"bytes_down":100,"stat_errors":1}`
	if string(js) != wantJSON {
		t.Errorf("JSON %s\nwant %s", js, wantJSON)
	}
}

// pager reports three pages per List.
type pager struct{ *mem.Backend }

func (p pager) ListPages(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error, page func()) error {
	for i := 0; i < 3; i++ {
		page()
	}
	return p.Backend.List(ctx, t, fn)
}

func TestCountingListPages(t *testing.T) {
	c := backend.NewCounting(pager{mem.New()})
	for i := 0; i < 2; i++ {
		if err := c.List(context.Background(), backend.IndexFile, func(backend.FileInfo) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Snapshot(); got.Lists != 2 || got.ListPages != 6 {
		t.Errorf("counts %+v: want 2 lists of 3 pages", got)
	}
}

// Counting below Retry sees every attempt, and the retry count comes from
// Report.
func TestCountingBelowRetry(t *testing.T) {
	m := mem.New()
	hook, _ := failFirst(mem.OpSave, 2, errTransient)
	m.SetHook(hook)
	c := backend.NewCounting(m)
	opts := fast
	opts.Report = c.ReportRetry
	be := backend.NewRetry(c, opts)
	data := []byte("twelve bytes")
	if err := be.Save(context.Background(), packHandle(data), backend.BytesSource(data)); err != nil {
		t.Fatal(err)
	}
	got := c.Snapshot()
	// The hook fails before mem reads the source, so only the successful
	// attempt moved bytes.
	if got.Saves != 3 || got.Retries != 2 || got.Errors != 2 || got.BytesUp != 12 {
		t.Errorf("counts %+v", got)
	}
}

func TestCountingConcurrent(t *testing.T) {
	c := backend.NewCounting(mem.New())
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			data := []byte{byte(i), 1, 2, 3}
			h := packHandle(data)
			if err := c.Save(ctx, h, backend.BytesSource(data)); err != nil {
				t.Error(err)
			}
			if _, err := backend.LoadAll(ctx, c, h); err != nil {
				t.Error(err)
			}
			_ = c.Snapshot()
		}(i)
	}
	wg.Wait()
	if got := c.Snapshot(); got.Saves != 32 || got.Loads != 32 || got.BytesUp != 128 || got.BytesDown != 128 {
		t.Errorf("counts %+v", got)
	}
}

func TestCountingUnwrap(t *testing.T) {
	m := mem.New()
	c := backend.NewCounting(m)
	if c.Unwrap() != backend.Backend(m) {
		t.Error("Unwrap does not return the wrapped backend")
	}
	if c.Location() != m.Location() {
		t.Errorf("Location %q, want %q", c.Location(), m.Location())
	}
	if err := c.Create(context.Background()); err != nil {
		t.Errorf("Create on a backend that needs none: %v", err)
	}
}
