package backend_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// A refused deletion is its own error class, permanent (never retried),
// with its end; retention calls go through both decorators and are counted.
func TestDeleteRefusedThroughDecorators(t *testing.T) {
	ctx := context.Background()
	lk := backendtest.NewLocking(mem.New(), time.Hour)
	counting := backend.NewCounting(lk)
	retries := 0
	be := backend.NewRetry(counting, backend.RetryOptions{InitialDelay: time.Millisecond,
		Report: func(string, backend.Handle, int, error) { retries++ }})

	data := []byte("index file")
	h := backend.Handle{Type: backend.IndexFile, Name: packHandle(data).Name}
	if err := be.Save(ctx, h, backend.BytesSource(data)); err != nil {
		t.Fatal(err)
	}
	err := be.Remove(ctx, h)
	until, refused := backend.RefusedUntil(err)
	if !refused || !errors.Is(err, backend.ErrDeleteRefused) || !backend.IsPermanent(err) || until.IsZero() {
		t.Fatalf("remove of a locked file: %v (refused %v, until %v)", err, refused, until)
	}
	if retries != 0 {
		t.Errorf("a refused deletion was retried %d times", retries)
	}
	got, err := backend.RetainUntil(ctx, be, h)
	if err != nil || !got.Equal(until) {
		t.Fatalf("RetainUntil through the decorators: %v, %v; want %v", got, err, until)
	}
	later := until.Add(time.Hour)
	if err := backend.ExtendRetention(ctx, be, h, later); err != nil {
		t.Fatal(err)
	}
	if got := lk.Until(h); !got.Equal(later) {
		t.Errorf("after ExtendRetention: until %v, want %v", got, later)
	}
	c := counting.Snapshot()
	if c.RetentionExtends != 1 || c.Removes != 1 || c.Stats != 1 || c.ClassA() != c.Saves+c.ListPages+1 {
		t.Errorf("counts %+v: want 1 extension (class A), 1 remove, 1 stat", c)
	}
	if backend.RetentionPeriod(be) != time.Hour {
		t.Errorf("RetentionPeriod through the decorators: %v", backend.RetentionPeriod(be))
	}

	// A backend without retention says so, without a request counted.
	plain := backend.NewCounting(mem.New())
	if _, err := backend.RetainUntil(ctx, backend.NewRetry(plain, backend.RetryOptions{}), h); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("RetainUntil on mem: %v, want ErrUnsupported", err)
	}
	if n := plain.Snapshot().Stats; n != 0 {
		t.Errorf("unsupported RetainUntil counted %d stats", n)
	}
}
