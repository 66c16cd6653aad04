package nightly

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

const testPassword = "test password"

// testRepo is a repository in memory with a cheap KDF; open opens it again
// on the same storage, as the Service wants.
type testRepo struct {
	be *mem.Backend
	r  *repo.Repository
}

func newTestRepo(t *testing.T) *testRepo {
	t.Helper()
	be := mem.New()
	r, err := repo.Init(context.Background(), be, testPassword,
		repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &testRepo{be: be, r: r}
}

func (tr *testRepo) open(ctx context.Context) (*repo.Repository, error) {
	return repo.Open(ctx, backend.NewCounting(tr.be), testPassword, repo.Options{})
}

func (tr *testRepo) snapshots(t *testing.T) []*repo.Snapshot {
	t.Helper()
	list, err := tr.r.ListSnapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func (tr *testRepo) locks(t *testing.T) []*repo.LockInfo {
	t.Helper()
	l, err := tr.r.ListLocks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// clock is an injectable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func targets(names ...string) []Target {
	out := make([]Target, len(names))
	for i, n := range names {
		out[i] = Target{Name: n, Detail: "detail-" + n}
	}
	return out
}

func staticDiscoverer(names ...string) Discoverer {
	return DiscoverFunc(func(context.Context) ([]Target, error) { return targets(names...), nil })
}

// fakeBackup backs a target up as a small stream snapshot shaped like
// pgstream's (tag NAME, paths ["/NAME"]), at now() on host; fail decides
// per call which targets fail (before writing anything).
type fakeBackup struct {
	now  func() time.Time
	host string
	size int

	mu    sync.Mutex
	calls []string
	fail  func(name string, call int) error
	// block, when set, makes a target's stream hang (after some data)
	// until ctx ends; started gets the target's name when it does.
	block   func(name string, call int) bool
	started chan string
	// gate, when set, ends a blocked stream (successfully) when closed.
	gate chan struct{}
}

func (f *fakeBackup) fn(ctx context.Context, r *repo.Repository, t Target) (BackupResult, error) {
	f.mu.Lock()
	call := len(f.calls)
	f.calls = append(f.calls, t.Name)
	f.mu.Unlock()
	if t.Detail != "detail-"+t.Name {
		return BackupResult{}, fmt.Errorf("detail not handed back: %v", t.Detail)
	}
	if f.fail != nil {
		if err := f.fail(t.Name, call); err != nil {
			return BackupResult{}, err
		}
	}
	size := f.size
	if size == 0 {
		size = 4 << 10
	}
	data := make([]byte, size)
	rand.New(rand.NewSource(int64(call))).Read(data)
	var rd io.Reader = bytes.NewReader(data)
	if f.block != nil && f.block(t.Name, call) {
		rd = &blockingReader{ctx: ctx, data: data, started: f.started, name: t.Name, gate: f.gate}
	}
	now := time.Now()
	if f.now != nil {
		now = f.now()
	}
	res, err := r.BackupStreams(ctx, t.Name, []repo.Stream{{Name: "db.pgdump", Reader: rd}},
		repo.BackupOptions{Tags: []string{t.Name}, Hostname: f.host, Time: now})
	if err != nil {
		return BackupResult{}, err
	}
	return BackupResult{SnapshotID: res.SnapshotID, BytesRead: res.Sizes[t.Name+"/db.pgdump"],
		BytesAdded: res.Stats.DataAdded, BytesStored: res.Stats.DataAddedPacked}, nil
}

func (f *fakeBackup) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// blockingReader yields data, then blocks until ctx ends.
type blockingReader struct {
	ctx     context.Context
	data    []byte
	off     int
	started chan string
	name    string
	once    sync.Once
	gate    chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.off < len(b.data) {
		n := copy(p, b.data[b.off:])
		b.off += n
		return n, nil
	}
	b.once.Do(func() {
		if b.started != nil {
			b.started <- b.name
		}
	})
	select {
	case <-b.ctx.Done():
		return 0, b.ctx.Err()
	case <-b.gate:
		return 0, io.EOF
	}
}

var errDumpFailed = errors.New("pg_dump exited with status 1: connection refused")

// testLogger logs to the test's output when -v.
func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// saveDrillRecord writes a snapshot shaped like pgstream's drill record
// (tags drill, drill-of:NAME, drill-passed or drill-failed).
func saveDrillRecord(t *testing.T, r *repo.Repository, name string, passed bool, at time.Time, host string) repo.ID {
	t.Helper()
	return saveDrillRecordTagged(t, r, name, DrillOfTag(name), passed, at, host)
}

// saveOldDrillRecord writes a drill record as pgstream wrote them before
// drill-of: (tags drill, NAME, drill-passed or drill-failed).
func saveOldDrillRecord(t *testing.T, r *repo.Repository, name string, passed bool, at time.Time, host string) repo.ID {
	t.Helper()
	return saveDrillRecordTagged(t, r, name, name, passed, at, host)
}

func saveDrillRecordTagged(t *testing.T, r *repo.Repository, name, nameTag string, passed bool, at time.Time, host string) repo.ID {
	t.Helper()
	status := DrillFailedTag
	if passed {
		status = DrillPassedTag
	}
	res, err := r.BackupStream(context.Background(), repo.Stream{Name: "drill/" + name + ".json", Reader: bytes.NewReader([]byte(`{"passed":true}`))},
		repo.BackupOptions{Tags: []string{DrillTag, nameTag, status}, Hostname: host, Time: at})
	if err != nil {
		t.Fatal(err)
	}
	return res.SnapshotID
}
