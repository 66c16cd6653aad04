// Package backendtest is the behaviour every backend.Backend must show,
// written as a test suite: RunContract runs it against a fresh backend per
// subtest. The mem, local and S3 backends all run it from their tests.
//
// Beyond the backend.Backend documentation, the contract fixes these points:
//   - Save of an existing handle fails with an error wrapping fs.ErrExist and
//     leaves the stored file as it was, unless the backend implements Replacer
//     and reports true; then the new content replaces the old in one step.
//   - Save stores exactly src.Length() bytes: a source that ends early, runs
//     long, fails, or whose context is cancelled leaves no trace (Stat and
//     Load report ErrNotExist, List does not show it).
//   - Save accepts plain names that are not 64 lowercase hex digits (such as
//     "tmp-file" or upper-case hex; Stat and Load find them), and List never
//     reports them.
//   - Load's range errors are permanent (backend.IsPermanent) and do not wrap
//     ErrNotExist; they may come from Load or from the first Read.
//   - Missing files wrap ErrNotExist from Load, Stat and Remove.
//   - List returns fn's error (errors.Is finds it) and stops calling fn; fn may
//     call Remove on the backend while listing.
package backendtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Replacer is implemented by backends whose Save replaces an existing file
// atomically instead of failing (see backend.Backend.Save).
type Replacer interface {
	AtomicReplace() bool
}

// RunContract runs the backend contract as subtests of t. newBackend must
// return an empty, ready backend (created if it is a backend.Creator) each
// time it is called; it should register its own cleanup with t.
func RunContract(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, be backend.Backend)
	}{
		{"Location", testLocation},
		{"RoundTrip", testRoundTrip},
		{"EmptyFile", testEmptyFile},
		{"RangedLoad", testRangedLoad},
		{"RangePastEnd", testRangePastEnd},
		{"InvalidRange", testInvalidRange},
		{"Missing", testMissing},
		{"InvalidHandle", testInvalidHandle},
		{"List", testList},
		{"ListEmpty", testListEmpty},
		{"ListSkipsInvalidNames", testListSkipsInvalidNames},
		{"ListCallbackError", testListCallbackError},
		{"ListCanceled", testListCanceled},
		{"ListWhileRemoving", testListWhileRemoving},
		{"Remove", testRemove},
		{"SaveTwice", testSaveTwice},
		{"SaveTwiceConcurrent", testSaveTwiceConcurrent},
		{"FailingSource", testFailingSource},
		{"ShortSource", testShortSource},
		{"LongSource", testLongSource},
		{"CanceledSave", testCanceledSave},
		{"CancelDuringSave", testCancelDuringSave},
		{"SourceNotRetained", testSourceNotRetained},
		{"IndependentReaders", testIndependentReaders},
		{"Concurrent", testConcurrent},
		{"Large", testLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newBackend(t)
			if be == nil {
				t.Fatal("newBackend returned nil")
			}
			tt.fn(t, be)
			if err := be.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// ---- helpers ----

// rng returns a generator seeded from the test's name, so every run of a
// test sees the same data.
func rng(t *testing.T) *rand.Rand {
	seed := sha256.Sum256([]byte(t.Name()))
	return rand.New(rand.NewChaCha8(seed))
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// idOf is the content-addressed name of data, as the repository names files.
func idOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func randomID(r *rand.Rand) string {
	return idOf(randomBytes(r, 32))
}

func save(t *testing.T, be backend.Backend, h backend.Handle, data []byte) {
	t.Helper()
	if err := be.Save(context.Background(), h, backend.BytesSource(data)); err != nil {
		t.Fatalf("Save(%v): %v", h, err)
	}
}

// load reads a range and returns the bytes, or the first error from Load,
// reading or Close.
func load(be backend.Backend, h backend.Handle, length int, offset int64) ([]byte, error) {
	return loadCtx(context.Background(), be, h, length, offset)
}

func loadCtx(ctx context.Context, be backend.Backend, h backend.Handle, length int, offset int64) ([]byte, error) {
	rd, err := be.Load(ctx, h, length, offset)
	if err != nil {
		return nil, err
	}
	if rd == nil {
		return nil, errors.New("the backend's Load returned a nil reader and no error")
	}
	buf, err := io.ReadAll(rd)
	cerr := rd.Close()
	if err != nil {
		return buf, err
	}
	return buf, cerr
}

func mustLoad(t *testing.T, be backend.Backend, h backend.Handle, length int, offset int64) []byte {
	t.Helper()
	buf, err := load(be, h, length, offset)
	if err != nil {
		t.Fatalf("Load(%v, length %d, offset %d): %v", h, length, offset, err)
	}
	return buf
}

func checkContent(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		if len(got) != len(want) {
			t.Errorf("%s: got %d bytes, want %d", what, len(got), len(want))
			return
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: %d bytes as expected but they differ first at byte %d", what, len(got), i)
				return
			}
		}
	}
}

// list returns the FileInfos List reports for t, failing on duplicates.
func list(t *testing.T, be backend.Backend, ft backend.FileType) map[string]int64 {
	t.Helper()
	seen := make(map[string]int64)
	err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
		if _, dup := seen[fi.Name]; dup {
			t.Errorf("List(%v) reported %q twice", ft, fi.Name)
		}
		seen[fi.Name] = fi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%v): %v", ft, err)
	}
	return seen
}

func checkList(t *testing.T, be backend.Backend, ft backend.FileType, want map[string]int64) {
	t.Helper()
	got := list(t, be, ft)
	var missing, extra, wrongSize []string
	for name, size := range want {
		gsize, ok := got[name]
		switch {
		case !ok:
			missing = append(missing, name)
		case gsize != size:
			wrongSize = append(wrongSize, fmt.Sprintf("%s: %d bytes, want %d", name, gsize, size))
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			extra = append(extra, name)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	sort.Strings(wrongSize)
	if len(missing) > 0 {
		t.Errorf("List(%v) misses %v", ft, missing)
	}
	if len(extra) > 0 {
		t.Errorf("List(%v) reports unexpected %v", ft, extra)
	}
	if len(wrongSize) > 0 {
		t.Errorf("List(%v) reports wrong sizes: %v", ft, wrongSize)
	}
}

func checkNotExist(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: no error, want one wrapping backend.ErrNotExist", what)
	case !errors.Is(err, backend.ErrNotExist):
		t.Errorf("%s: error %q does not wrap backend.ErrNotExist", what, err)
	case !backend.IsPermanent(err):
		t.Errorf("%s: error %q is not permanent", what, err)
	}
}

// checkAbsent verifies that no operation can see h.
func checkAbsent(t *testing.T, be backend.Backend, h backend.Handle) {
	t.Helper()
	_, err := be.Stat(context.Background(), h)
	checkNotExist(t, fmt.Sprintf("Stat(%v)", h), err)
	_, err = load(be, h, 0, 0)
	checkNotExist(t, fmt.Sprintf("Load(%v)", h), err)
	if h.Type != backend.ConfigFile {
		if size, ok := list(t, be, h.Type)[h.Name]; ok {
			t.Errorf("List(%v) reports %q (%d bytes), which should not exist", h.Type, h.Name, size)
		}
	}
}

func checkStat(t *testing.T, be backend.Backend, h backend.Handle, size int64) {
	t.Helper()
	fi, err := be.Stat(context.Background(), h)
	if err != nil {
		t.Errorf("Stat(%v): %v", h, err)
		return
	}
	if fi.Size != size {
		t.Errorf("Stat(%v).Size = %d, want %d", h, fi.Size, size)
	}
	if fi.Name != h.Name {
		t.Errorf("Stat(%v).Name = %q, want %q", h, fi.Name, h.Name)
	}
}

var configHandle = backend.Handle{Type: backend.ConfigFile}

// allHandles returns one fresh handle of each type, the config included.
func allHandles(r *rand.Rand) []backend.Handle {
	hs := []backend.Handle{configHandle}
	for _, ft := range backend.FileTypes {
		hs = append(hs, backend.Handle{Type: ft, Name: randomID(r)})
	}
	return hs
}

// ---- the contract ----

func testLocation(t *testing.T, be backend.Backend) {
	if be.Location() == "" {
		t.Error("Location() is empty")
	}
}

func testRoundTrip(t *testing.T, be backend.Backend) {
	r := rng(t)
	for _, size := range []int{1, 1000, 65536 + 17, 1 << 20} {
		for _, ft := range backend.FileTypes {
			data := randomBytes(r, size)
			h := backend.Handle{Type: ft, Name: idOf(data)}
			save(t, be, h, data)
			checkStat(t, be, h, int64(size))
			checkContent(t, fmt.Sprintf("Load(%v, 0, 0)", h), mustLoad(t, be, h, 0, 0), data)
			all, err := backend.LoadAll(context.Background(), be, h)
			if err != nil {
				t.Fatalf("LoadAll(%v): %v", h, err)
			}
			checkContent(t, fmt.Sprintf("LoadAll(%v)", h), all, data)
		}
	}

	config := randomBytes(r, 155)
	save(t, be, configHandle, config)
	checkStat(t, be, configHandle, int64(len(config)))
	checkContent(t, "Load(config)", mustLoad(t, be, configHandle, 0, 0), config)
	for _, ft := range backend.FileTypes {
		for name := range list(t, be, ft) {
			if name == "" || name == "config" {
				t.Errorf("List(%v) reports the config file as %q", ft, name)
			}
		}
	}
}

func testEmptyFile(t *testing.T, be backend.Backend) {
	r := rng(t)
	for _, ft := range []backend.FileType{backend.LockFile, backend.PackFile} {
		h := backend.Handle{Type: ft, Name: randomID(r)}
		save(t, be, h, nil)
		checkStat(t, be, h, 0)
		if got := mustLoad(t, be, h, 0, 0); len(got) != 0 {
			t.Errorf("Load(%v) of an empty file returned %d bytes", h, len(got))
		}
		checkList(t, be, ft, map[string]int64{h.Name: 0})
		_, err := load(be, h, 1, 0)
		checkRangeError(t, h, 1, 0, err)
		_, err = load(be, h, 0, 1)
		checkRangeError(t, h, 0, 1, err)
	}
}

func testRangedLoad(t *testing.T, be backend.Backend) {
	r := rng(t)
	const size = 10007
	data := randomBytes(r, size)
	h := backend.Handle{Type: backend.PackFile, Name: idOf(data)}
	save(t, be, h, data)

	cases := []struct {
		length int
		offset int64
	}{
		{0, 0},            // all
		{1, 0},            // first byte
		{100, 0},          // start
		{1000, 4000},      // middle
		{1, 5000},         // one byte in the middle
		{100, size - 100}, // end, exactly
		{0, size - 100},   // to the end from the middle
		{1, size - 1},     // last byte
		{0, size - 1},     // last byte, to the end
		{size, 0},         // everything, explicitly
		{0, size},         // offset at the end: nothing
		{size - 1, 1},     // everything but the first byte
	}
	for _, c := range cases {
		got := mustLoad(t, be, h, c.length, c.offset)
		end := int64(size)
		if c.length > 0 {
			end = c.offset + int64(c.length)
		}
		checkContent(t, fmt.Sprintf("Load(length %d, offset %d)", c.length, c.offset), got, data[c.offset:end])
	}

	// Small reads from a ranged reader see the same bytes, then io.EOF.
	rd, err := be.Load(context.Background(), h, 300, 700)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := rd.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if len(got) > 300 {
			t.Fatalf("ranged reader gave more than 300 bytes")
		}
	}
	if err := rd.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	checkContent(t, "Load(300, 700) in 7-byte reads", got, data[700:1000])
}

func checkRangeError(t *testing.T, h backend.Handle, length int, offset int64, err error) {
	t.Helper()
	what := fmt.Sprintf("Load(%v, length %d, offset %d)", h, length, offset)
	switch {
	case err == nil:
		t.Errorf("%s past the end: no error", what)
	case !backend.IsPermanent(err):
		t.Errorf("%s past the end: error %q is not permanent", what, err)
	case errors.Is(err, backend.ErrNotExist):
		t.Errorf("%s past the end: error %q claims the file does not exist", what, err)
	}
}

func testRangePastEnd(t *testing.T, be backend.Backend) {
	r := rng(t)
	const size = 5003
	data := randomBytes(r, size)
	for _, ft := range []backend.FileType{backend.PackFile, backend.IndexFile} {
		h := backend.Handle{Type: ft, Name: idOf(data)}
		save(t, be, h, data)
		cases := []struct {
			length int
			offset int64
		}{
			{1, size},          // one byte at the end
			{0, size + 1},      // offset past the end
			{10, size - 9},     // runs one byte over
			{size + 1, 0},      // the whole file and one more
			{100, size + 1000}, // far past
			{0, 1 << 40},       // very far past
		}
		for _, c := range cases {
			_, err := load(be, h, c.length, c.offset)
			checkRangeError(t, h, c.length, c.offset, err)
		}
		// The file is unharmed.
		checkContent(t, "Load after range errors", mustLoad(t, be, h, 0, 0), data)
	}
}

func testInvalidRange(t *testing.T, be backend.Backend) {
	data := []byte("some bytes to read")
	h := backend.Handle{Type: backend.SnapshotFile, Name: idOf(data)}
	save(t, be, h, data)
	for _, c := range []struct {
		length int
		offset int64
	}{{-1, 0}, {0, -1}, {5, -3}} {
		if got, err := load(be, h, c.length, c.offset); err == nil {
			t.Errorf("Load(length %d, offset %d): no error, got %q", c.length, c.offset, got)
		}
	}
}

func testMissing(t *testing.T, be backend.Backend) {
	r := rng(t)
	ctx := context.Background()
	// Put something in each folder so "missing" is not just "empty".
	for _, h := range allHandles(r) {
		if h.Type != backend.ConfigFile {
			save(t, be, h, []byte("present"))
		}
	}
	for _, h := range allHandles(r) {
		_, err := be.Stat(ctx, h)
		checkNotExist(t, fmt.Sprintf("Stat(%v)", h), err)
		_, err = load(be, h, 0, 0)
		checkNotExist(t, fmt.Sprintf("Load(%v)", h), err)
		_, err = load(be, h, 10, 5)
		checkNotExist(t, fmt.Sprintf("Load(%v, 10, 5)", h), err)
		err = be.Remove(ctx, h)
		checkNotExist(t, fmt.Sprintf("Remove(%v)", h), err)
	}
}

func testInvalidHandle(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	bad := []backend.Handle{
		{Type: "bogus", Name: idOf([]byte("x"))},
		{Type: "", Name: idOf([]byte("y"))},
		{Type: backend.KeyFile, Name: ""},
		{Type: backend.PackFile, Name: ""},
	}
	for _, h := range bad {
		if err := be.Save(ctx, h, backend.BytesSource([]byte("data"))); err == nil {
			t.Errorf("Save(%#v): no error", h)
		}
		if _, err := be.Stat(ctx, h); err == nil {
			t.Errorf("Stat(%#v): no error", h)
		}
		if _, err := load(be, h, 0, 0); err == nil {
			t.Errorf("Load(%#v): no error", h)
		}
		if err := be.Remove(ctx, h); err == nil {
			t.Errorf("Remove(%#v): no error", h)
		}
	}
	for _, ft := range backend.FileTypes {
		checkList(t, be, ft, map[string]int64{})
	}
	if _, err := be.Stat(ctx, configHandle); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("Stat(config) after invalid saves: %v, want ErrNotExist", err)
	}
}

func testList(t *testing.T, be backend.Backend) {
	r := rng(t)
	want := make(map[backend.FileType]map[string]int64)
	for i, ft := range backend.FileTypes {
		want[ft] = make(map[string]int64)
		for j := 0; j < 3+i; j++ {
			data := randomBytes(r, 10+100*j+i)
			name := idOf(data)
			save(t, be, backend.Handle{Type: ft, Name: name}, data)
			want[ft][name] = int64(len(data))
		}
	}
	// Two packs that share their data/XX prefix.
	data := randomBytes(r, 33)
	first := idOf(data)
	save(t, be, backend.Handle{Type: backend.PackFile, Name: first}, data)
	want[backend.PackFile][first] = int64(len(data))
	twin := first[:2] + idOf([]byte("same prefix"))[2:]
	save(t, be, backend.Handle{Type: backend.PackFile, Name: twin}, []byte("same prefix"))
	want[backend.PackFile][twin] = int64(len("same prefix"))

	save(t, be, configHandle, []byte("config"))
	for _, ft := range backend.FileTypes {
		checkList(t, be, ft, want[ft])
	}
}

func testListEmpty(t *testing.T, be backend.Backend) {
	for _, ft := range backend.FileTypes {
		err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
			t.Errorf("List(%v) of an empty backend reported %+v", ft, fi)
			return nil
		})
		if err != nil {
			t.Errorf("List(%v) of an empty backend: %v", ft, err)
		}
	}
}

func testListSkipsInvalidNames(t *testing.T, be backend.Backend) {
	r := rng(t)
	valid := randomID(r)
	invalid := []string{
		"tmp-file",
		"0123456789abcdef",
		valid[:63],
		valid + "0",
		"ABCDEF" + valid[6:],
		valid[:60] + ".tmp",
		valid + "-tmp-123",
		"zz" + valid[2:],
	}
	for _, ft := range backend.FileTypes {
		save(t, be, backend.Handle{Type: ft, Name: valid}, []byte("valid"))
		for _, name := range invalid {
			h := backend.Handle{Type: ft, Name: name}
			if err := be.Save(context.Background(), h, backend.BytesSource([]byte("stray "+name))); err != nil {
				t.Fatalf("Save(%v) with a name that is not 64 hex digits: %v", h, err)
			}
			checkStat(t, be, h, int64(len("stray "+name)))
		}
		checkList(t, be, ft, map[string]int64{valid: int64(len("valid"))})
	}
}

var errStop = errors.New("backendtest: stop listing")

func testListCallbackError(t *testing.T, be backend.Backend) {
	r := rng(t)
	for _, ft := range []backend.FileType{backend.SnapshotFile, backend.PackFile} {
		for i := 0; i < 5; i++ {
			save(t, be, backend.Handle{Type: ft, Name: randomID(r)}, []byte{byte(i)})
		}
		calls := 0
		err := be.List(context.Background(), ft, func(backend.FileInfo) error {
			calls++
			return errStop
		})
		if !errors.Is(err, errStop) {
			t.Errorf("List(%v) with a failing callback returned %v, want the callback's error", ft, err)
		}
		if calls != 1 {
			t.Errorf("List(%v) called the callback %d times after it failed the first time", ft, calls)
		}
	}
}

func testListCanceled(t *testing.T, be backend.Backend) {
	r := rng(t)
	for i := 0; i < 3; i++ {
		save(t, be, backend.Handle{Type: backend.IndexFile, Name: randomID(r)}, []byte{byte(i)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := be.List(ctx, backend.IndexFile, func(backend.FileInfo) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("List with a cancelled context returned %v, want context.Canceled", err)
	}
}

func testListWhileRemoving(t *testing.T, be backend.Backend) {
	r := rng(t)
	ctx := context.Background()
	for _, ft := range []backend.FileType{backend.LockFile, backend.PackFile} {
		for i := 0; i < 10; i++ {
			save(t, be, backend.Handle{Type: ft, Name: randomID(r)}, []byte{byte(i)})
		}
		n := 0
		err := be.List(ctx, ft, func(fi backend.FileInfo) error {
			n++
			return be.Remove(ctx, backend.Handle{Type: ft, Name: fi.Name})
		})
		if err != nil {
			t.Fatalf("List(%v) removing every file: %v", ft, err)
		}
		if n != 10 {
			t.Errorf("List(%v) reported %d files, want 10", ft, n)
		}
		checkList(t, be, ft, map[string]int64{})
	}
}

func testRemove(t *testing.T, be backend.Backend) {
	r := rng(t)
	ctx := context.Background()
	for _, h := range allHandles(r) {
		data := randomBytes(r, 321)
		keep := backend.Handle{Type: h.Type, Name: randomID(r)}
		if h.Type != backend.ConfigFile {
			save(t, be, keep, []byte("keep"))
		}
		save(t, be, h, data)
		if err := be.Remove(ctx, h); err != nil {
			t.Fatalf("Remove(%v): %v", h, err)
		}
		checkAbsent(t, be, h)
		checkNotExist(t, fmt.Sprintf("second Remove(%v)", h), be.Remove(ctx, h))
		if h.Type != backend.ConfigFile {
			checkList(t, be, h.Type, map[string]int64{keep.Name: 4})
			checkContent(t, "untouched neighbour", mustLoad(t, be, keep, 0, 0), []byte("keep"))
		}
		// The name can be used again.
		save(t, be, h, data)
		checkContent(t, "Load after saving a removed name again", mustLoad(t, be, h, 0, 0), data)
	}
}

func replaces(be backend.Backend) bool {
	rp, ok := be.(Replacer)
	return ok && rp.AtomicReplace()
}

func testSaveTwice(t *testing.T, be backend.Backend) {
	r := rng(t)
	for _, h := range allHandles(r) {
		first := randomBytes(r, 1000)
		second := randomBytes(r, 700)
		save(t, be, h, first)
		err := be.Save(context.Background(), h, backend.BytesSource(second))
		if replaces(be) {
			if err != nil {
				t.Errorf("second Save(%v) on a replacing backend: %v", h, err)
			}
			checkContent(t, "Load after replacing", mustLoad(t, be, h, 0, 0), second)
			continue
		}
		switch {
		case err == nil:
			t.Errorf("second Save(%v) of an existing file: no error", h)
		case !errors.Is(err, fs.ErrExist):
			t.Errorf("second Save(%v): error %q does not wrap fs.ErrExist", h, err)
		}
		checkStat(t, be, h, int64(len(first)))
		checkContent(t, fmt.Sprintf("Load(%v) after a refused second Save", h), mustLoad(t, be, h, 0, 0), first)
	}
}

func testSaveTwiceConcurrent(t *testing.T, be backend.Backend) {
	r := rng(t)
	const workers = 8
	for _, h := range []backend.Handle{configHandle, {Type: backend.LockFile, Name: randomID(r)}, {Type: backend.PackFile, Name: randomID(r)}} {
		contents := make([][]byte, workers)
		for i := range contents {
			contents[i] = randomBytes(r, 200_000+i*1000)
		}
		errs := make([]error, workers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < workers; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				errs[i] = be.Save(context.Background(), h, backend.BytesSource(contents[i]))
			}(i)
		}
		close(start)
		wg.Wait()

		got := mustLoad(t, be, h, 0, 0)
		var ok []int
		for i, err := range errs {
			if err == nil {
				ok = append(ok, i)
			} else if !replaces(be) && !errors.Is(err, fs.ErrExist) {
				t.Errorf("concurrent Save(%v) #%d: error %q does not wrap fs.ErrExist", h, i, err)
			} else if replaces(be) {
				t.Errorf("concurrent Save(%v) #%d on a replacing backend: %v", h, i, err)
			}
		}
		if !replaces(be) && len(ok) != 1 {
			t.Errorf("concurrent Saves of %v: %d succeeded, want exactly 1", h, len(ok))
		}
		match := false
		for _, i := range ok {
			if bytes.Equal(got, contents[i]) {
				match = true
			}
		}
		if !match {
			t.Errorf("concurrent Saves of %v: the stored %d bytes are not the content of a successful Save", h, len(got))
		}
	}
}

// digests are the two kinds of source the contract saves from: one that
// does not know its SHA-256 and one that does (a pack), which S3 sends
// another way (a signed payload instead of a signed stream).
var digests = []struct {
	name string
	of   func([]byte) []byte
}{
	{"no digest", func([]byte) []byte { return nil }},
	{"known SHA-256", func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }},
}

func testFailingSource(t *testing.T, be backend.Backend) {
	r := rng(t)
	for _, h := range allHandles(r) {
		for _, d := range digests {
			for _, good := range []int{0, 1000, 4999} {
				data := randomBytes(r, 5000)
				err := be.Save(context.Background(), h, &FailingSource{Data: data, Good: good, Digest: d.of(data)})
				if err == nil {
					t.Errorf("Save(%v) from a source (%s) failing after %d bytes: no error", h, d.name, good)
				}
				checkAbsent(t, be, h)
			}
		}
		// A good save afterwards works: nothing was left behind in the way.
		save(t, be, h, []byte("after the failure"))
		checkContent(t, "Load after a failed Save", mustLoad(t, be, h, 0, 0), []byte("after the failure"))
	}
}

func testShortSource(t *testing.T, be backend.Backend) {
	r := rng(t)
	for _, h := range allHandles(r) {
		for _, d := range digests {
			data := randomBytes(r, 3000)
			err := be.Save(context.Background(), h, &LyingSource{Data: data, Claimed: 5000, Digest: d.of(data)})
			if err == nil {
				t.Errorf("Save(%v) from a source (%s) with 3000 bytes claiming 5000: no error", h, d.name)
			}
			checkAbsent(t, be, h)
		}
	}
}

func testLongSource(t *testing.T, be backend.Backend) {
	r := rng(t)
	for _, h := range allHandles(r) {
		for _, d := range digests {
			data := randomBytes(r, 5000)
			// The digest of the bytes it claims, so that only the length
			// can give it away.
			err := be.Save(context.Background(), h, &LyingSource{Data: data, Claimed: 3000, Digest: d.of(data[:3000])})
			if err == nil {
				fi, _ := be.Stat(context.Background(), h)
				t.Errorf("Save(%v) from a source (%s) with 5000 bytes claiming 3000: no error (stored %d bytes)", h, d.name, fi.Size)
			}
			checkAbsent(t, be, h)
		}
	}
}

func testCanceledSave(t *testing.T, be backend.Backend) {
	r := rng(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, h := range allHandles(r) {
		err := be.Save(ctx, h, backend.BytesSource(randomBytes(r, 100)))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Save(%v) with a cancelled context returned %v, want context.Canceled", h, err)
		}
		checkAbsent(t, be, h)
		if _, err := loadCtx(ctx, be, h, 0, 0); err == nil {
			t.Errorf("Load(%v) with a cancelled context: no error", h)
		}
	}
}

func testCancelDuringSave(t *testing.T, be backend.Backend) {
	r := rng(t)
	for _, h := range []backend.Handle{configHandle, {Type: backend.PackFile, Name: randomID(r)}} {
		ctx, cancel := context.WithCancel(context.Background())
		src := &GenSource{Size: 8 << 20, Seed: [32]byte{1}}
		src.AfterRead = func(pos int64) {
			if pos >= 1<<20 {
				cancel()
			}
		}
		err := be.Save(ctx, h, src)
		cancel()
		if err == nil {
			t.Errorf("Save(%v) cancelled after 1 MiB of 8: no error", h)
		}
		checkAbsent(t, be, h)
	}
}

func testSourceNotRetained(t *testing.T, be backend.Backend) {
	data := []byte("the original content of a snapshot file")
	want := bytes.Clone(data)
	h := backend.Handle{Type: backend.SnapshotFile, Name: idOf(data)}
	save(t, be, h, data)
	for i := range data {
		data[i] = 'X'
	}
	checkContent(t, "Load after the caller reused its buffer", mustLoad(t, be, h, 0, 0), want)
}

func testIndependentReaders(t *testing.T, be backend.Backend) {
	r := rng(t)
	data := randomBytes(r, 100_000)
	h := backend.Handle{Type: backend.PackFile, Name: idOf(data)}
	save(t, be, h, data)
	ctx := context.Background()
	a, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := be.Load(ctx, h, 50_000, 25_000)
	if err != nil {
		t.Fatal(err)
	}
	var gotA, gotB []byte
	bufA, bufB := make([]byte, 4096), make([]byte, 3000)
	for doneA, doneB := false, false; !doneA || !doneB; {
		if !doneA {
			n, err := a.Read(bufA)
			gotA = append(gotA, bufA[:n]...)
			if err == io.EOF {
				doneA = true
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if !doneB {
			n, err := b.Read(bufB)
			gotB = append(gotB, bufB[:n]...)
			if err == io.EOF {
				doneB = true
			} else if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.Close(); err != nil {
		t.Error(err)
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
	checkContent(t, "interleaved reader A", gotA, data)
	checkContent(t, "interleaved reader B", gotB, data[25_000:75_000])

	// A reader closed before the end does not disturb later loads.
	c, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	checkContent(t, "Load after an early Close", mustLoad(t, be, h, 10, 99_990), data[99_990:])
}

func testConcurrent(t *testing.T, be backend.Backend) {
	r := rng(t)
	const files, workers = 50, 8
	type file struct {
		h    backend.Handle
		data []byte
	}
	all := make([]file, files)
	want := make(map[backend.FileType]map[string]int64)
	for _, ft := range backend.FileTypes {
		want[ft] = make(map[string]int64)
	}
	for i := range all {
		data := randomBytes(r, 1000+r.IntN(200_000))
		ft := backend.FileTypes[i%len(backend.FileTypes)]
		all[i] = file{backend.Handle{Type: ft, Name: idOf(data)}, data}
		want[ft][idOf(data)] = int64(len(data))
	}

	ctx := context.Background()
	work := make(chan file)
	errc := make(chan error, files*4)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if err := be.Save(ctx, f.h, backend.BytesSource(f.data)); err != nil {
					errc <- fmt.Errorf("Save(%v): %w", f.h, err)
					continue
				}
				fi, err := be.Stat(ctx, f.h)
				if err != nil || fi.Size != int64(len(f.data)) {
					errc <- fmt.Errorf("Stat(%v) = %+v, %v; want %d bytes", f.h, fi, err, len(f.data))
				}
				got, err := load(be, f.h, 0, 0)
				if err != nil || !bytes.Equal(got, f.data) {
					errc <- fmt.Errorf("Load(%v) of a file just saved: %d bytes, error %v", f.h, len(got), err)
				}
				off := int64(len(f.data) / 3)
				got, err = load(be, f.h, 500, off)
				if err != nil || !bytes.Equal(got, f.data[off:off+500]) {
					errc <- fmt.Errorf("Load(%v, 500, %d): error %v or wrong bytes", f.h, off, err)
				}
			}
		}()
	}
	for _, f := range all {
		work <- f
	}
	close(work)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for _, ft := range backend.FileTypes {
		checkList(t, be, ft, want[ft])
	}

	// Concurrent loads of everything, then concurrent removes.
	errc = make(chan error, files*2)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < files; i += workers {
				got, err := load(be, all[i].h, 0, 0)
				if err != nil || !bytes.Equal(got, all[i].data) {
					errc <- fmt.Errorf("concurrent Load(%v): error %v or wrong bytes", all[i].h, err)
				}
				if err := be.Remove(ctx, all[i].h); err != nil {
					errc <- fmt.Errorf("concurrent Remove(%v): %w", all[i].h, err)
				}
			}
		}(w)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for _, ft := range backend.FileTypes {
		checkList(t, be, ft, map[string]int64{})
	}
}

func testLarge(t *testing.T, be backend.Backend) {
	const size = 20 << 20
	seed := sha256.Sum256([]byte("large"))
	// The expected bytes, read from the generator in odd-sized pieces.
	gen := &GenSource{Size: size, Seed: seed}
	want := make([]byte, 0, size)
	buf := make([]byte, 12345)
	for {
		n, err := gen.Read(buf)
		want = append(want, buf[:n]...)
		if err == io.EOF {
			break
		}
	}
	if len(want) != size {
		t.Fatalf("generator gave %d bytes", len(want))
	}

	h := backend.Handle{Type: backend.PackFile, Name: idOf(want)}
	if err := be.Save(context.Background(), h, &GenSource{Size: size, Seed: seed}); err != nil {
		t.Fatalf("Save of %d bytes: %v", size, err)
	}
	checkStat(t, be, h, size)
	checkList(t, be, backend.PackFile, map[string]int64{h.Name: size})

	rd, err := be.Load(context.Background(), h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.New()
	n, err := io.Copy(hash, rd)
	if err != nil {
		t.Fatalf("reading %d bytes: %v", size, err)
	}
	if err := rd.Close(); err != nil {
		t.Error(err)
	}
	if n != size || hex.EncodeToString(hash.Sum(nil)) != h.Name {
		t.Errorf("Load of the large file: %d bytes with hash %x, want %d bytes with hash %s", n, hash.Sum(nil), size, h.Name)
	}
	for _, c := range []struct {
		length int
		offset int64
	}{
		{1 << 20, 8<<20 - 512<<10}, // across the 8 MiB mark
		{0, size - 100},            // the tail, to the end
		{36, size - 36},            // a pack trailer's worth
		{1, size / 2},
	} {
		end := int64(size)
		if c.length > 0 {
			end = c.offset + int64(c.length)
		}
		checkContent(t, fmt.Sprintf("Load(%d, %d) of the large file", c.length, c.offset),
			mustLoad(t, be, h, c.length, c.offset), want[c.offset:end])
	}
	_, err = load(be, h, 2, size-1)
	checkRangeError(t, h, 2, size-1, err)
}
