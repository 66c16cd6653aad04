package repo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// dmgFixture is a repository with one snapshot per stream, each stream's
// data unique to it.
type dmgFixture struct {
	r     *Repository
	be    *mem.Backend
	snaps []ID
	data  [][]byte
}

func dmgSetup(t *testing.T, n int) *dmgFixture {
	t.Helper()
	ctx := context.Background()
	r, be := newTestRepo(t, 2, Options{})
	f := &dmgFixture{r: r, be: be}
	for i := 0; i < n; i++ {
		d := mixedData(int64(100+i), 300<<10)
		res, err := r.BackupStream(ctx, Stream{Name: "db", Reader: bytes.NewReader(d)},
			BackupOptions{Tags: []string{"c" + string(rune('a'+i))}, Hostname: "h", Time: time.Date(2024, 1, 1+i, 0, 0, 0, 0, time.UTC)})
		if err != nil {
			t.Fatal(err)
		}
		f.snaps = append(f.snaps, res.SnapshotID)
		f.data = append(f.data, d)
	}
	return f
}

// damage rewrites a stored file.
func (f *dmgFixture) damage(t *testing.T, h backend.Handle, edit func([]byte) []byte) {
	t.Helper()
	b, ok := f.be.Get(h)
	if !ok {
		t.Fatalf("%v not stored", h)
	}
	f.be.Put(h, edit(bytes.Clone(b)))
}

func (f *dmgFixture) open(t *testing.T, skipped *[]SkippedFile) *Repository {
	t.Helper()
	var mu sync.Mutex
	r, err := Open(context.Background(), f.be, "secret", Options{Skipped: func(s SkippedFile) {
		mu.Lock()
		defer mu.Unlock()
		*skipped = append(*skipped, s)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

var dmgEdits = map[string]func([]byte) []byte{
	"flipped byte": func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b },
	"truncated":    func(b []byte) []byte { return b[:len(b)/2] },
	"garbage":      func(b []byte) []byte { return []byte("not a restic file at all") },
	"empty":        func(b []byte) []byte { return nil },
}

// One damaged snapshot file: listing, latest and forget keep working and
// name it; the snapshot itself fails by ID; prune stops and changes
// nothing.
func TestDamagedSnapshotIsSkipped(t *testing.T) {
	ctx := context.Background()
	for name, edit := range dmgEdits {
		t.Run(name, func(t *testing.T) {
			f := dmgSetup(t, 3)
			bad := f.snaps[2] // the newest
			h := backend.Handle{Type: backend.SnapshotFile, Name: bad.String()}
			f.damage(t, h, edit)
			var skipped []SkippedFile
			r := f.open(t, &skipped)

			list, sk, err := r.LoadSnapshots(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 2 || list[0].ID != f.snaps[0] || list[1].ID != f.snaps[1] {
				t.Fatalf("listed %v", list)
			}
			if len(sk) != 1 || sk[0].Handle != h || !strings.Contains(sk[0].String(), "snapshots/"+bad.String()) {
				t.Fatalf("skipped %v", sk)
			}
			var ce *CorruptError
			if !errors.As(sk[0].Err, &ce) {
				t.Errorf("skipped for %v, want a CorruptError", sk[0].Err)
			}
			if len(skipped) != 0 {
				t.Errorf("LoadSnapshots reported to Options.Skipped: %v", skipped)
			}
			// "latest" is the newest readable snapshot; the skipped file
			// is reported once.
			for i := 0; i < 2; i++ {
				sn, err := r.FindSnapshot(ctx, "latest", SnapshotFilter{})
				if err != nil || sn.ID != f.snaps[1] {
					t.Fatalf("latest: %v, %v", sn, err)
				}
			}
			if len(skipped) != 1 || skipped[0].Handle != h {
				t.Errorf("Options.Skipped heard %v, want %v once", skipped, h)
			}
			if got := dumpFile(t, r, list[0], "/db"); !bytes.Equal(got, f.data[0]) {
				t.Error("an undamaged snapshot reads differently")
			}
			// By its ID, the damaged snapshot is an error naming it.
			if _, err := r.FindSnapshot(ctx, bad.Str(), SnapshotFilter{}); !errors.As(err, &ce) || !strings.Contains(err.Error(), "snapshots/"+bad.String()) {
				t.Errorf("FindSnapshot by ID: %v", err)
			}
			// Forget works on the rest.
			res, err := r.ForgetWithOptions(ctx, ForgetOptions{GroupBy: GroupBy{}, Policy: ExpirePolicy{Last: 1}})
			if err != nil || len(res.Removed) != 1 || res.Removed[0] != f.snaps[0] {
				t.Fatalf("forget: %+v, %v", res, err)
			}
			// Prune cannot tell what the damaged snapshot needs: it stops,
			// naming the file and the way out, and changes nothing.
			before := f.be.Handles()
			for _, dry := range []bool{true, false} {
				_, err := r.Prune(ctx, PruneOptions{DryRun: dry, MaxUnused: "0%"})
				var dse *DamagedSnapshotsError
				if !errors.As(err, &dse) || len(dse.Skipped) != 1 || !strings.Contains(err.Error(), "snapshots/"+bad.String()) ||
					!strings.Contains(err.Error(), "forget "+bad.String()) || !strings.Contains(err.Error(), "changed nothing") {
					t.Fatalf("prune (dry run %v): %v", dry, err)
				}
			}
			if after := f.be.Handles(); len(after) != len(before) {
				t.Fatalf("prune changed the repository: %d files, was %d", len(after), len(before))
			}
			// Once the damaged file is removed, prune works again.
			if _, err := r.RemoveSnapshots(ctx, []ID{bad}); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Prune(ctx, PruneOptions{MaxUnused: "0%"}); err != nil {
				t.Fatal(err)
			}
			r2 := f.open(t, new([]SkippedFile))
			sn, err := r2.LoadSnapshot(ctx, f.snaps[1])
			if err != nil {
				t.Fatal(err)
			}
			if got := dumpFile(t, r2, sn, "/db"); !bytes.Equal(got, f.data[1]) {
				t.Error("the kept snapshot reads differently after prune")
			}
		})
	}
}

// A snapshot removed between the listing and its load is left out
// silently; a transient failure fails the listing (an outage must not look
// like an empty repository).
func TestSnapshotListingVanishedAndTransient(t *testing.T) {
	ctx := context.Background()
	f := dmgSetup(t, 2)
	gone := f.snaps[0].String()
	f.be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpLoad && h.Type == backend.SnapshotFile && h.Name == gone {
			return backend.ErrNotExist
		}
		return nil
	})
	list, sk, err := f.r.LoadSnapshots(ctx)
	if err != nil || len(list) != 1 || len(sk) != 0 {
		t.Fatalf("vanished: %v %v %v", list, sk, err)
	}
	f.be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpLoad && h.Type == backend.SnapshotFile && h.Name == gone {
			return errors.New("503 ServiceUnavailable (test)")
		}
		return nil
	})
	if _, _, err := f.r.LoadSnapshots(ctx); err == nil {
		t.Fatal("a transient failure was skipped")
	}
	// Access denied for good is skipped, naming the file.
	f.be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpLoad && h.Type == backend.SnapshotFile && h.Name == gone {
			return backend.Permanent(errors.New("403 AccessDenied (test)"))
		}
		return nil
	})
	list, sk, err = f.r.LoadSnapshots(ctx)
	if err != nil || len(list) != 1 || len(sk) != 1 || sk[0].Handle.Name != gone {
		t.Fatalf("denied: %v %v %v", list, sk, err)
	}
}

// One damaged index file: backups, restores of what other files index and
// listings keep working; the index file is reported; a blob only it lists
// is missing with the file named; prune rebuilds the index from the pack
// headers and deletes nothing a snapshot needs.
func TestDamagedIndexIsSkipped(t *testing.T) {
	ctx := context.Background()
	f := dmgSetup(t, 3)
	var files []string
	for _, h := range f.be.Handles() {
		if h.Type == backend.IndexFile {
			files = append(files, h.Name)
		}
	}
	if len(files) != 3 {
		t.Fatalf("want one index file per backup, have %d", len(files))
	}
	// The index file of the first backup: find which one lists its tree.
	var bad string
	first, err := f.r.LoadSnapshot(ctx, f.snaps[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		id, _ := ParseID(name)
		ij, err := f.r.loadIndexFile(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ij.Packs {
			for _, b := range p.Blobs {
				if b.ID == *first.Tree {
					bad = name
				}
			}
		}
	}
	h := backend.Handle{Type: backend.IndexFile, Name: bad}
	f.damage(t, h, dmgEdits["flipped byte"])

	var skipped []SkippedFile
	r := f.open(t, &skipped)
	list, err := r.ListSnapshots(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("list: %d, %v", len(list), err)
	}
	// The other snapshots restore.
	for i := 1; i < 3; i++ {
		sn, _ := r.LoadSnapshot(ctx, f.snaps[i])
		if got := dumpFile(t, r, sn, "/db"); !bytes.Equal(got, f.data[i]) {
			t.Fatalf("snapshot %d reads differently", i)
		}
	}
	if len(skipped) != 1 || skipped[0].Handle != h {
		t.Fatalf("skipped %v, want %v", skipped, h)
	}
	// The first one's tree is listed only in the damaged file.
	if _, err := r.FindNode(ctx, first, "/db"); !errors.Is(err, ErrBlobMissing) || !strings.Contains(err.Error(), "index/"+bad) {
		t.Fatalf("first snapshot: %v, want ErrBlobMissing naming the damaged index file", err)
	}
	// A backup works.
	d := mixedData(200, 200<<10)
	if _, err := r.BackupStream(ctx, Stream{Name: "db", Reader: bytes.NewReader(d)}, BackupOptions{Hostname: "h"}); err != nil {
		t.Fatal(err)
	}
	// Prune reads the headers of the packs the damaged file listed and
	// keeps what the first snapshot needs.
	st, err := r.Prune(ctx, PruneOptions{MaxUnused: "0%"})
	if err != nil {
		t.Fatal(err)
	}
	if st.IndexFilesDamaged != 1 || st.PacksRecovered == 0 {
		t.Errorf("prune: %+v, want one damaged index file and recovered packs", st)
	}
	if _, ok := f.be.Get(h); ok {
		t.Error("the damaged index file is still there after prune")
	}
	r2 := f.open(t, new([]SkippedFile))
	for i, id := range f.snaps {
		sn, err := r2.LoadSnapshot(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := dumpFile(t, r2, sn, "/db"); !bytes.Equal(got, f.data[i]) {
			t.Fatalf("snapshot %d reads differently after prune", i)
		}
	}
	rep, err := r2.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || !rep.Ok() || len(rep.Hints) != 0 {
		t.Fatalf("check after prune: %v %s", err, chkDump(t, rep))
	}
}

// A damaged index file whose packs no longer read: prune stops.
func TestPruneStopsWhenRecoveryFails(t *testing.T) {
	ctx := context.Background()
	f := dmgSetup(t, 2)
	var idxName string
	for _, h := range f.be.Handles() {
		if h.Type == backend.IndexFile {
			idxName = h.Name
			break
		}
	}
	id, _ := ParseID(idxName)
	ij, err := f.r.loadIndexFile(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	f.damage(t, backend.Handle{Type: backend.IndexFile, Name: idxName}, dmgEdits["truncated"])
	pack := backend.Handle{Type: backend.PackFile, Name: ij.Packs[0].ID.String()}
	f.damage(t, pack, func(b []byte) []byte { b[len(b)-10] ^= 1; return b }) // in the header
	before := len(f.be.Handles())
	r := f.open(t, new([]SkippedFile))
	_, err = r.Prune(ctx, PruneOptions{MaxUnused: "0%"})
	if err == nil || !strings.Contains(err.Error(), pack.String()) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("prune: %v", err)
	}
	if len(f.be.Handles()) != before {
		t.Fatal("prune changed the repository")
	}
}

// Temporary files of interrupted writes: check names each as a hint; prune
// removes those older than the safe age and keeps younger ones.
func TestLeftovers(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	lb := local.New(dir)
	be := backend.NewRetry(backend.NewCounting(lb), backend.RetryOptions{})
	r, err := Init(ctx, be, "secret", InitOptions{KDF: testKDF}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.BackupStream(ctx, Stream{Name: "db", Reader: bytes.NewReader(mixedData(1, 100<<10))}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * DefaultLeftoverAge)
	files := map[string]time.Time{
		"data/ab/.tmp-111": old, "snapshots/.tmp-222": old, ".tmp-333": old, "index/.tmp-444": time.Now(),
	}
	for p, mt := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.WriteFile(full, []byte("partial"), 0o400); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	// Not ours: never touched.
	strays := []string{"data/ab/notes.txt", "data/.tmp-555", "keys/x.tmp-1"}
	for _, p := range strays {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.WriteFile(full, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(full, old, old)
	}
	rep, err := r.Check(ctx, CheckOptions{})
	if err != nil || !rep.Ok() {
		t.Fatalf("check: %v %s", err, chkDump(t, rep))
	}
	for p := range files {
		chkWant(t, rep, true, ProblemLeftover, p, "interrupted write")
	}
	if !rep.SuggestPrune() {
		t.Error("check does not suggest a prune")
	}
	dry, err := r.Prune(ctx, PruneOptions{DryRun: true})
	if err != nil || dry.LeftoversRemoved != 3 || dry.LeftoversKept != 1 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	for p := range files {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(p))); err != nil {
			t.Fatalf("dry run removed %s", p)
		}
	}
	st, err := r.Prune(ctx, PruneOptions{})
	if err != nil || st.LeftoversRemoved != 3 || st.LeftoversKept != 1 || st.LeftoverSize != 3*7 {
		t.Fatalf("prune: %+v %v", st, err)
	}
	for p, mt := range files {
		_, err := os.Stat(filepath.Join(dir, filepath.FromSlash(p)))
		if gone := errors.Is(err, os.ErrNotExist); gone != mt.Equal(old) {
			t.Errorf("%s: removed %v", p, gone)
		}
	}
	for _, p := range strays {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(p))); err != nil {
			t.Errorf("prune removed %s, which is not its own temporary file", p)
		}
	}
	// The young one goes once old enough.
	st, err = r.Prune(ctx, PruneOptions{LeftoverAge: time.Nanosecond})
	if err != nil || st.LeftoversRemoved != 1 {
		t.Fatalf("second prune: %+v %v", st, err)
	}
	rep, err = r.Check(ctx, CheckOptions{})
	if err != nil || !rep.Ok() || len(rep.Hints) != 0 {
		t.Fatalf("check after prune: %v %s", err, chkDump(t, rep))
	}
	// Only its own temporary files can be removed.
	l, _ := backend.Leftovers(be)
	for _, p := range []string{"data/ab/notes.txt", "config", "../x/.tmp-1", "data/ab/../.tmp-1", "keys/x.tmp-1"} {
		if err := l.RemoveLeftover(ctx, p); err == nil {
			t.Errorf("RemoveLeftover(%q) succeeded", p)
		}
	}
}

// Check names a damaged key file as an error; the repository still opens
// with the intact key, and names the damaged one.
func TestCheckDamagedKey(t *testing.T) {
	ctx := context.Background()
	f := dmgSetup(t, 1)
	id, err := f.r.AddKey(ctx, "other", testKDF, "u", "h")
	if err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.KeyFile, Name: id.String()}
	f.damage(t, h, dmgEdits["flipped byte"])
	var skipped []SkippedFile
	r := f.open(t, &skipped)
	if len(skipped) > 1 || len(skipped) == 1 && skipped[0].Handle != h {
		t.Errorf("skipped %v", skipped)
	}
	rep, err := r.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chkWant(t, rep, false, ProblemKey, "keys/"+id.String(), "does not match its name")
	if len(rep.Errors) != 1 {
		t.Fatalf("check: %s", chkDump(t, rep))
	}
	// The other password's key is the damaged one: not a wrong password.
	_, err = Open(ctx, f.be, "other", Options{})
	var dke *DamagedKeyError
	if !errors.As(err, &dke) || errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), "keys/"+id.String()) {
		t.Fatalf("open with the damaged key's password: %v", err)
	}
}
