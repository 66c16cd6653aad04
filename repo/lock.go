package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Lock timing, as restic has it: a lock is refreshed every 5 minutes and a
// lock older than 30 minutes is stale.
const (
	lockRefreshInterval = 5 * time.Minute
	lockStaleAfter      = 30 * time.Minute
)

// LockInfo is a lock file's content.
type LockInfo struct {
	Time      time.Time `json:"time"`
	Exclusive bool      `json:"exclusive"`
	Hostname  string    `json:"hostname"`
	Username  string    `json:"username"`
	PID       int       `json:"pid"`
	UID       uint32    `json:"uid,omitempty"`
	GID       uint32    `json:"gid,omitempty"`

	ID ID `json:"-"`
}

// Stale reports whether the lock's holder is gone: older than 30 minutes,
// or on this host with no process of that PID.
func (l *LockInfo) Stale(now time.Time, host string) bool {
	if now.Sub(l.Time) > lockStaleAfter {
		return true
	}
	if l.Hostname != host {
		return false
	}
	return !processExists(l.PID)
}

func processExists(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func (l *LockInfo) String() string {
	kind := "non-exclusive"
	if l.Exclusive {
		kind = "exclusive"
	}
	return fmt.Sprintf("%s lock %s held by PID %d on %s by %s, created %s ago", kind, l.ID.Str(), l.PID, l.Hostname, l.Username, time.Since(l.Time).Round(time.Second))
}

// LockedError reports a lock that conflicts with the one requested.
type LockedError struct{ Holder *LockInfo }

func (e *LockedError) Error() string {
	msg := "repository is already locked: " + e.Holder.String()
	host, _ := os.Hostname()
	if e.Holder.Stale(time.Now(), host) {
		msg += "; the lock is stale (its holder is gone): remove it with `scalr-backup unlock`"
	}
	return msg
}

// Lock is a held repository lock, refreshed in the background until
// Unlock. When a refresh fails for too long, Lost is closed: the holder
// must stop writing, as its lock may look stale to others.
type Lock struct {
	r      *Repository
	info   LockInfo
	mu     sync.Mutex
	id     ID
	stop   chan struct{}
	done   chan struct{}
	lost   chan struct{}
	lostMu sync.Once
}

// Lost is closed when the lock could not be kept fresh.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// ListLocks loads every lock file. A lock that cannot be read is reported
// as an error naming it, like restic since 0.15.
func (r *Repository) ListLocks(ctx context.Context) ([]*LockInfo, error) {
	return r.listLocks(ctx, ID{})
}

// listLocks loads every lock file but skip's, several at a time: hosts
// sharing a repository each leave a lock during their passes, and a lock
// check reads them all before a command may start.
func (r *Repository) listLocks(ctx context.Context, skip ID) ([]*LockInfo, error) {
	var ids []ID
	err := r.be.List(ctx, backend.LockFile, func(fi backend.FileInfo) error {
		id, err := ParseID(fi.Name)
		if err == nil && id != skip {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list locks: %w", err)
	}
	loaded := make([]*LockInfo, len(ids))
	pos := make(map[ID]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	err = forEachParallel(ctx, ids, 8, func(ctx context.Context, id ID) error {
		var li LockInfo
		if err := r.loadJSON(ctx, backend.LockFile, id, &li); err != nil {
			if errors.Is(err, backend.ErrNotExist) && ctx.Err() == nil {
				return nil // removed meanwhile
			}
			return err
		}
		li.ID = id
		loaded[pos[id]] = &li
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []*LockInfo
	for _, li := range loaded {
		if li != nil {
			out = append(out, li)
		}
	}
	return out, nil
}

// Lock takes a lock: exclusive ones conflict with any other lock,
// non-exclusive ones with exclusive locks only. Stale locks still conflict
// (only unlock removes them), as in restic. With Options.LockRetry set, a
// conflict is retried for that long.
func (r *Repository) Lock(ctx context.Context, exclusive bool) (*Lock, error) {
	if r.opts.LockRetry > 0 {
		return r.lockWithRetry(ctx, exclusive, r.opts.LockRetry)
	}
	return r.lockOnce(ctx, exclusive)
}

func (r *Repository) lockOnce(ctx context.Context, exclusive bool) (*Lock, error) {
	if err := r.checkLocks(ctx, exclusive, ID{}); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	l := &Lock{r: r, info: LockInfo{
		Exclusive: exclusive, Hostname: host, Username: currentUser(),
		PID: os.Getpid(), UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
	}, stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
	if err := l.write(ctx); err != nil {
		return nil, err
	}
	// Check again: another process may have locked between our check and
	// our write. Whoever sees the other's lock backs off.
	if err := r.checkLocks(ctx, exclusive, l.id); err != nil {
		_ = l.remove(context.WithoutCancel(ctx), l.id)
		return nil, err
	}
	go l.refresher()
	return l, nil
}

func (r *Repository) checkLocks(ctx context.Context, exclusive bool, own ID) error {
	// Our own lock is not loaded: it is known, and on storage 20 ms away
	// loading it was one more round trip before every command.
	locks, err := r.listLocks(ctx, own)
	if err != nil {
		return err
	}
	for _, li := range locks {
		if exclusive || li.Exclusive {
			return &LockedError{Holder: li}
		}
	}
	return nil
}

func (l *Lock) write(ctx context.Context) error {
	l.info.Time = time.Now()
	id, err := l.r.saveJSON(ctx, backend.LockFile, &l.info)
	if err != nil {
		return fmt.Errorf("create lock: %w", err)
	}
	l.mu.Lock()
	l.id = id
	l.mu.Unlock()
	return nil
}

func (l *Lock) remove(ctx context.Context, id ID) error {
	h := backend.Handle{Type: backend.LockFile, Name: id.String()}
	if err := l.r.be.Remove(ctx, h); err != nil && !errors.Is(err, backend.ErrNotExist) {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// refresher replaces the lock file every 5 minutes: a new one is written
// before the old is removed, so the repository is never unlocked.
func (l *Lock) refresher() {
	defer close(l.done)
	every, lostAfter := lockRefreshInterval, lockStaleAfter-lockRefreshInterval
	if l.r.lockRefresh > 0 {
		every, lostAfter = l.r.lockRefresh, l.r.lockLostAfter
	}
	t := time.NewTicker(every)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		l.mu.Lock()
		old := l.id
		l.mu.Unlock()
		err := l.write(ctx)
		if err == nil {
			_ = l.remove(ctx, old)
			lastOK = time.Now()
		} else if time.Since(lastOK) > lostAfter {
			l.lostMu.Do(func() { close(l.lost) })
		}
		cancel()
	}
}

// Unlock stops refreshing and removes the lock file.
func (l *Lock) Unlock(ctx context.Context) error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	id := l.id
	l.mu.Unlock()
	return l.remove(ctx, id)
}

// lockWithRetry retries a conflicting lock with growing pauses for up to
// retry (restic's --retry-lock).
func (r *Repository) lockWithRetry(ctx context.Context, exclusive bool, retry time.Duration) (*Lock, error) {
	deadline := time.Now().Add(retry)
	pause := time.Second
	for {
		l, err := r.lockOnce(ctx, exclusive)
		var le *LockedError
		if err == nil || !errors.As(err, &le) || time.Now().Add(pause).After(deadline) {
			return l, err
		}
		if notify := r.opts.LockWait; notify != nil && pause == time.Second {
			notify(le.Holder, retry)
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if pause < time.Minute {
			pause *= 2
		}
	}
}

// RemoveStaleLocks removes the locks whose holders are gone (all locks when
// all is set) and returns how many it removed. Locks of live processes are
// left alone unless all is set.
func (r *Repository) RemoveStaleLocks(ctx context.Context, all bool) (int, error) {
	if all {
		// Unreadable lock files block every command: --remove-all must
		// clear them without reading them.
		var ids []ID
		if err := r.be.List(ctx, backend.LockFile, func(fi backend.FileInfo) error {
			if id, err := ParseID(fi.Name); err == nil {
				ids = append(ids, id)
			}
			return nil
		}); err != nil {
			return 0, fmt.Errorf("list locks: %w", err)
		}
		for i, id := range ids {
			if err := r.removeFile(ctx, backend.LockFile, id); err != nil {
				return i, err
			}
		}
		return len(ids), nil
	}
	locks, err := r.ListLocks(ctx)
	if err != nil {
		return 0, err
	}
	host, _ := os.Hostname()
	n := 0
	for _, li := range locks {
		if !all && !li.Stale(time.Now(), host) {
			continue
		}
		if err := r.removeFile(ctx, backend.LockFile, li.ID); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// unlockTimeout bounds removing a lock at the end of an operation: when
// storage is down, the operation has already failed, and the lock will be
// stale (and removable with unlock) once its holder is gone.
const unlockTimeout = 30 * time.Second

// release removes the lock even when ctx was cancelled, giving up after
// unlockTimeout.
func (l *Lock) release(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
	defer cancel()
	return l.Unlock(ctx)
}

// Hold takes a lock (see Lock) for work that must stop when the lock can no
// longer be kept fresh (others may then see it stale and, say, prune): the
// returned context ends then, with a cause naming what stopped; done
// releases the lock and the context, and says whether the lock file could
// be removed (a caller that has nothing else to report may ignore it: the
// lock is then stale once this process is gone).
func (r *Repository) Hold(ctx context.Context, exclusive bool, what string) (context.Context, func() error, error) {
	lock, err := r.Lock(ctx, exclusive)
	if err != nil {
		return nil, nil, err
	}
	held, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-lock.Lost():
			cancel(fmt.Errorf("the repository lock could not be refreshed; %s stopped", what))
		case <-held.Done():
		}
	}()
	return held, func() error {
		cancel(nil)
		return lock.release(ctx)
	}, nil
}
