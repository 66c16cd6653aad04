package backend_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// Errors no retry can fix fail at once, on every operation, even when the
// backend that returned them did not mark them permanent: this is the rule
// of the retry decorator, not of each backend.
func TestRetryUnfixableNotRetried(t *testing.T) {
	unfixable := []error{
		&fs.PathError{Op: "mkdir", Path: "/x/repo", Err: syscall.EACCES},
		fmt.Errorf("write data/ab/.tmp-1: %w", syscall.ENOSPC),
		&os.LinkError{Op: "link", Old: "a", New: "b", Err: syscall.EROFS},
		fmt.Errorf("save: %w", syscall.EDQUOT),
		&fs.PathError{Op: "open", Path: "/x/config/keys", Err: syscall.ENOTDIR},
		&fs.PathError{Op: "open", Path: "/x", Err: syscall.EPERM},
		&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "s3.example.invalid", IsNotFound: true}},
	}
	for _, uerr := range unfixable {
		t.Run(uerr.Error(), func(t *testing.T) {
			if !backend.Unfixable(uerr) || !backend.IsPermanent(uerr) {
				t.Fatalf("Unfixable %v, IsPermanent %v: want both", backend.Unfixable(uerr), backend.IsPermanent(uerr))
			}
			for _, op := range []mem.Op{mem.OpSave, mem.OpLoad, mem.OpStat, mem.OpList, mem.OpRemove} {
				m := mem.New()
				data := []byte("x")
				h := packHandle(data)
				if err := m.Save(context.Background(), h, backend.BytesSource(data)); err != nil {
					t.Fatal(err)
				}
				hook, calls := failFirst(op, 100, uerr)
				m.SetHook(hook)
				var rep reports
				opts := backend.RetryOptions{InitialDelay: 200 * time.Millisecond, Report: rep.report}
				be := backend.NewRetry(m, opts)
				start := time.Now()
				var err error
				switch op {
				case mem.OpSave:
					err = be.Save(context.Background(), backend.Handle{Type: backend.SnapshotFile, Name: idOf([]byte("y"))}, backend.BytesSource([]byte("y")))
				case mem.OpLoad:
					_, err = backend.LoadAll(context.Background(), be, h)
				case mem.OpStat:
					_, err = be.Stat(context.Background(), h)
				case mem.OpList:
					err = be.List(context.Background(), backend.PackFile, func(backend.FileInfo) error { return nil })
				case mem.OpRemove:
					err = be.Remove(context.Background(), h)
				}
				if !errors.Is(err, uerr) {
					t.Errorf("%s: %v, want the cause %v", op, err, uerr)
				}
				// Under the first retry's delay: no wait before failing
				// (a loaded CI host may stall an in-memory call for a while).
				if calls.Load() != 1 || rep.n() != 0 || time.Since(start) >= opts.InitialDelay {
					t.Errorf("%s: %d attempts, %d retries in %v; want one attempt, no retry", op, calls.Load(), rep.n(), time.Since(start))
				}
			}
		})
	}
	// A DNS failure that is not "no such host" (a resolver timing out) and
	// a refused connection may heal: retried.
	for _, err := range []error{
		&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "i/o timeout", Name: "s3.example.com", IsTimeout: true}},
		&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED},
		errTransient,
	} {
		if backend.Unfixable(err) {
			t.Errorf("Unfixable(%v) = true, want false", err)
		}
	}
}

// Create (making a new repository's folders or bucket) follows the same
// rule: "init" on a path it may not create fails at once.
func TestRetryCreateUnfixable(t *testing.T) {
	var calls int
	cause := &fs.PathError{Op: "mkdir", Path: "/srv/repo", Err: syscall.EACCES}
	c := &creator{Backend: mem.New(), fn: func() error {
		calls++
		return fmt.Errorf("create local repository /srv/repo: %w", cause)
	}}
	start := time.Now()
	err := backend.NewRetry(c, backend.RetryOptions{InitialDelay: time.Second}).(backend.Creator).Create(context.Background())
	if !errors.Is(err, fs.ErrPermission) || calls != 1 || time.Since(start) > 500*time.Millisecond {
		t.Errorf("Create: %v after %d calls in %v; want permission denied after one call", err, calls, time.Since(start))
	}
}
