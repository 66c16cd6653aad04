package backendtest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Locking is a backend with per-file retention, as S3 Object Lock keeps
// it, for unit tests of what forget, prune and the retention extension do
// with it: files saved while Retention is set are locked until then plus
// Retention, a locked file refuses Remove with a backend.DeleteRefused
// error, and RetainUntil and ExtendRetention work as on S3 (a retention
// never shrinks). With RefuseAll every Remove outside locks/ is refused
// without an end, as credentials that may not delete or an R2 bucket lock
// rule do; with NoRetentionInfo RetainUntil is unsupported.
type Locking struct {
	backend.Backend

	mu              sync.Mutex
	Now             func() time.Time // nil: time.Now
	Retention       time.Duration
	RefuseAll       bool
	NoRetentionInfo bool
	until           map[backend.Handle]time.Time
	// Extends counts ExtendRetention calls.
	Extends int
}

// NewLocking wraps be.
func NewLocking(be backend.Backend, retention time.Duration) *Locking {
	return &Locking{Backend: be, Retention: retention, until: map[backend.Handle]time.Time{}}
}

func (l *Locking) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Save stores and locks (not lock files, as the S3 backend does).
func (l *Locking) Save(ctx context.Context, h backend.Handle, src backend.Source) error {
	if err := l.Backend.Save(ctx, h, src); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Retention > 0 && h.Type != backend.LockFile {
		l.until[h] = l.now().Add(l.Retention)
	}
	return nil
}

// Remove refuses locked files.
func (l *Locking) Remove(ctx context.Context, h backend.Handle) error {
	l.mu.Lock()
	until := l.until[h]
	refuse := l.RefuseAll && h.Type != backend.LockFile
	l.mu.Unlock()
	if refuse {
		return backend.DeleteRefused(h, time.Time{}, errors.New("403 AccessDenied"))
	}
	if until.After(l.now()) {
		return backend.DeleteRefused(h, until, errors.New("403 AccessDenied: object protected by object lock"))
	}
	return l.Backend.Remove(ctx, h)
}

// RetainUntil reports the lock's end.
func (l *Locking) RetainUntil(ctx context.Context, h backend.Handle) (time.Time, error) {
	if l.NoRetentionInfo {
		return time.Time{}, errors.ErrUnsupported
	}
	if _, err := l.Stat(ctx, h); err != nil {
		return time.Time{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until[h], nil
}

// ExtendRetention moves the lock's end later, never earlier.
func (l *Locking) ExtendRetention(ctx context.Context, h backend.Handle, until time.Time) error {
	if _, err := l.Backend.Stat(ctx, h); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Extends++
	if until.After(l.until[h]) {
		l.until[h] = until
	}
	return nil
}

// RetentionPeriod is the configured retention.
func (l *Locking) RetentionPeriod() time.Duration { return l.Retention }

// Unlock ends every retention now (as if time had passed).
func (l *Locking) Unlock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.until)
}

// Until returns h's lock end (zero: none).
func (l *Locking) Until(h backend.Handle) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until[h]
}
