package repo

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// lockFaults fails lock writes and lock removals when told to.
type lockFaults struct {
	backend.Backend
	failWrites, failRemoves atomic.Bool
}

var errLockFault = errors.New("injected lock fault")

func (b *lockFaults) Save(ctx context.Context, h backend.Handle, src backend.Source) error {
	if h.Type == backend.LockFile && b.failWrites.Load() {
		return errLockFault
	}
	return b.Backend.Save(ctx, h, src)
}

func (b *lockFaults) Remove(ctx context.Context, h backend.Handle) error {
	if h.Type == backend.LockFile && b.failRemoves.Load() {
		return errLockFault
	}
	return b.Backend.Remove(ctx, h)
}

// TestHoldLost: a lock that cannot be refreshed ends the held context with
// a cause naming the operation; forget's and backup's work runs on it.
func TestHoldLost(t *testing.T) {
	be := &lockFaults{Backend: mem.New()}
	r, err := Init(context.Background(), be, "pw", InitOptions{KDF: testKDF}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.lockRefresh, r.lockLostAfter = 10*time.Millisecond, 30*time.Millisecond
	held, done, err := r.Hold(context.Background(), true, "forget")
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	be.failWrites.Store(true)
	select {
	case <-held.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the held context outlived a lock that could not be refreshed")
	}
	if cause := context.Cause(held); cause == nil || !strings.Contains(cause.Error(), "forget stopped") {
		t.Errorf("cause %v; want one naming forget", cause)
	}
}

// TestForgetUnlockError: forget that cannot remove its lock says so (the
// lock would block every later exclusive operation until it is stale).
func TestForgetUnlockError(t *testing.T) {
	be := &lockFaults{Backend: mem.New()}
	r, err := Init(context.Background(), be, "pw", InitOptions{KDF: testKDF}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := r.BackupStream(ctx, Stream{Name: "f", Reader: strings.NewReader("x")}, BackupOptions{Hostname: "h", Time: time.Date(2026, 1, 1+i, 0, 0, 0, 0, time.UTC)}); err != nil {
			t.Fatal(err)
		}
	}
	be.failRemoves.Store(true)
	res, err := r.Forget(ctx, SnapshotFilter{}, DefaultGroupBy, ExpirePolicy{Last: 1}, false)
	if !errors.Is(err, errLockFault) {
		t.Fatalf("forget: %v; want the lock removal's error", err)
	}
	if res == nil || len(res.Removed) != 1 {
		t.Errorf("forget removed %d; want 1 (the work is done, only the unlock failed)", len(res.Removed))
	}
}
