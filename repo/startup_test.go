package repo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// Open fetches the config while it searches for the key, with no Stat
// first: the key file's load waits here until the config's load has
// started, which a config loaded after the key search never does.
func TestOpenLoadsConfigDuringKeySearch(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t, 2, Options{})
	configStarted := make(chan struct{})
	var once sync.Once
	var overlapped atomic.Bool
	var stats atomic.Int32
	be.SetHook(func(op mem.Op, h backend.Handle) error {
		switch {
		case op == mem.OpStat:
			stats.Add(1)
		case op == mem.OpLoad && h.Type == backend.ConfigFile:
			once.Do(func() { close(configStarted) })
		case op == mem.OpLoad && h.Type == backend.KeyFile:
			select {
			case <-configStarted:
				overlapped.Store(true)
			case <-time.After(2 * time.Second):
			}
		}
		return nil
	})
	r, err := Open(ctx, be, "secret", Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if !overlapped.Load() {
		t.Error("the config was not being loaded while the key file was")
	}
	if n := stats.Load(); n != 0 {
		t.Errorf("Open made %d Stat requests; the config's load answers whether it exists", n)
	}
}

// The config's failures still come first, whatever the key search was
// doing, and the key search has ended when Open returns: nothing touches
// the backend afterwards.
func TestOpenConfigFailures(t *testing.T) {
	ctx := context.Background()
	refused := fmt.Errorf("access denied: %w", fs.ErrPermission)
	for _, tc := range []struct {
		name  string
		setup func(be *mem.Backend)
		hook  func(op mem.Op, h backend.Handle) error
		check func(err error) bool
	}{
		{"refused", nil, func(op mem.Op, h backend.Handle) error {
			if op == mem.OpLoad && h.Type == backend.ConfigFile {
				return refused
			}
			return nil
		}, func(err error) bool {
			return errors.Is(err, fs.ErrPermission) && strings.Contains(err.Error(), "open mem:")
		}},
		{"config lost beside key files", func(be *mem.Backend) { be.Delete(backend.Handle{Type: backend.ConfigFile}) }, nil,
			func(err error) bool {
				var ce *CorruptError
				return errors.As(err, &ce) && strings.Contains(err.Error(), "missing, but the repository has 1 key files")
			}},
		{"empty location", func(be *mem.Backend) {
			for _, h := range be.Handles() {
				be.Delete(h)
			}
		}, nil, func(err error) bool { return errors.Is(err, backend.ErrNoRepository) }},
		{"wrong password", nil, nil, func(err error) bool { return errors.Is(err, ErrWrongPassword) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, be := newTestRepo(t, 2, Options{})
			if tc.setup != nil {
				tc.setup(be)
			}
			var returned atomic.Bool
			var late atomic.Int32
			be.SetHook(func(op mem.Op, h backend.Handle) error {
				if returned.Load() {
					late.Add(1)
				}
				if tc.hook != nil {
					return tc.hook(op, h)
				}
				return nil
			})
			password := "secret"
			if strings.HasPrefix(tc.name, "wrong password") {
				password = "not the secret"
			}
			r, err := Open(ctx, be, password, Options{})
			returned.Store(true)
			if err == nil {
				r.Close()
				t.Fatal("opened")
			}
			if !tc.check(err) {
				t.Fatalf("error: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
			if n := late.Load(); n != 0 {
				t.Fatalf("%d backend requests after Open returned", n)
			}
		})
	}
}

// A lock check loads the other lock files several at a time and never our
// own: with three locks present, taking a fourth loads each of them once
// per check (six loads, not seven), and the loads overlap.
func TestLockLoadsOthersConcurrentlyNotOwn(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t, 2, Options{})
	for i := 0; i < 3; i++ {
		l, err := r.Lock(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock(ctx)
	}
	var (
		loads, inFlight, most atomic.Int32
		mu                    sync.Mutex
		loaded                = map[string]int{}
	)
	be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op != mem.OpLoad || h.Type != backend.LockFile {
			return nil
		}
		loads.Add(1)
		mu.Lock()
		loaded[h.Name]++
		mu.Unlock()
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		return nil
	})
	l, err := r.Lock(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	if n := loads.Load(); n != 6 {
		t.Errorf("%d lock file loads for a fourth lock; want 6 (3 other locks, 2 checks)", n)
	}
	if loaded[l.id.String()] != 0 {
		t.Error("the lock check loaded our own lock file")
	}
	if m := most.Load(); m < 2 {
		t.Errorf("at most %d lock file loads at once; want them overlapping", m)
	}
}

// statKnowsMore is a backend whose Stat says more about a missing config
// than its Load, as SFTP's names a missing repository folder.
type statKnowsMore struct {
	backend.Backend
	stats atomic.Int32
}

func (s *statKnowsMore) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	s.stats.Add(1)
	if h.Type == backend.ConfigFile {
		return backend.FileInfo{}, fmt.Errorf("the repository folder /srv/x does not exist: %w", backend.ErrNoRepository)
	}
	return s.Backend.Stat(ctx, h)
}

// A config that loads as missing is asked about once with Stat, whose
// answer decides the error; a config that loads asks nothing more.
func TestOpenMissingConfigAsksStat(t *testing.T) {
	ctx := context.Background()
	_, be := newTestRepo(t, 2, Options{})
	sk := &statKnowsMore{Backend: be}
	r, err := Open(ctx, sk, "secret", Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if n := sk.stats.Load(); n != 0 {
		t.Fatalf("%d Stat requests opening a sound repository", n)
	}
	be.Delete(backend.Handle{Type: backend.ConfigFile})
	_, err = Open(ctx, sk, "secret", Options{})
	if !errors.Is(err, backend.ErrNoRepository) || !strings.Contains(err.Error(), "/srv/x does not exist") || sk.stats.Load() != 1 {
		t.Fatalf("missing config: %v after %d Stat requests; want the Stat's answer after one", err, sk.stats.Load())
	}
}
