package backendtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// broken wraps a mem backend with one deliberate defect.
type broken struct {
	*mem.Backend
	defect string
}

func (b *broken) Save(ctx context.Context, h backend.Handle, src backend.Source) error {
	if err := h.Valid(); err != nil {
		return err
	}
	switch b.defect {
	case "overwrite":
		if err := src.Rewind(); err != nil {
			return err
		}
		data, err := io.ReadAll(src)
		if err != nil {
			return err
		}
		b.Put(h, data)
		return nil
	case "partial-visible":
		_ = src.Rewind()
		data, err := io.ReadAll(src)
		if _, exists := b.Get(h); !exists {
			b.Put(h, data)
		}
		return err
	case "ignore-length":
		_ = src.Rewind()
		data, err := io.ReadAll(src)
		if err != nil {
			return err
		}
		return b.Backend.Save(ctx, h, backend.BytesSource(data))
	case "exist-unwrapped":
		if _, ok := b.Get(h); ok {
			return errors.New("already there")
		}
	case "ignore-context":
		return b.Backend.Save(context.Background(), h, src)
	}
	return b.Backend.Save(ctx, h, src)
}

func (b *broken) Load(ctx context.Context, h backend.Handle, length int, offset int64) (io.ReadCloser, error) {
	data, ok := b.Get(h)
	switch b.defect {
	case "ignore-offset":
		if ok && offset > 0 && offset <= int64(len(data)) {
			return b.Backend.Load(ctx, h, length, 0)
		}
	case "length0-empty":
		if ok && length == 0 && offset < int64(len(data)) {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
	case "short-range-ok":
		if ok && offset <= int64(len(data)) && offset+int64(length) > int64(len(data)) {
			return io.NopCloser(bytes.NewReader(data[offset:])), nil
		}
	case "range-not-permanent":
		if ok && (offset > int64(len(data)) || offset+int64(length) > int64(len(data))) {
			return nil, errors.New("range too long")
		}
	case "range-is-not-exist":
		if ok && (offset > int64(len(data)) || offset+int64(length) > int64(len(data))) {
			return nil, fmt.Errorf("short: %w", backend.ErrNotExist)
		}
	case "off-by-one-end":
		if ok && length > 0 && offset+int64(length) == int64(len(data)) {
			return nil, backend.Permanent(errors.New("range too long"))
		}
	}
	return b.Backend.Load(ctx, h, length, offset)
}

func (b *broken) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	fi, err := b.Backend.Stat(ctx, h)
	switch {
	case b.defect == "stat-wrong-size" && err == nil:
		fi.Size++
	case b.defect == "notexist-unwrapped" && errors.Is(err, backend.ErrNotExist):
		err = errors.New("not found")
	}
	return fi, err
}

func (b *broken) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	switch b.defect {
	case "list-invalid":
		var names []string
		for _, h := range b.Handles() {
			if h.Type == t {
				names = append(names, h.Name)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			data, _ := b.Get(backend.Handle{Type: t, Name: n})
			if err := fn(backend.FileInfo{Name: n, Size: int64(len(data))}); err != nil {
				return err
			}
		}
		return nil
	case "list-swallows-error":
		return b.Backend.List(ctx, t, func(fi backend.FileInfo) error { _ = fn(fi); return nil })
	case "list-all-types":
		for _, ft := range backend.FileTypes {
			if err := b.Backend.List(ctx, ft, fn); err != nil {
				return err
			}
		}
		return nil
	}
	return b.Backend.List(ctx, t, fn)
}

func (b *broken) Remove(ctx context.Context, h backend.Handle) error {
	err := b.Backend.Remove(ctx, h)
	if b.defect == "remove-missing-nil" && errors.Is(err, backend.ErrNotExist) {
		return nil
	}
	return err
}

// defects maps each defect to a subtest that must catch it.
var defects = map[string]string{
	"overwrite":           "SaveTwice",
	"exist-unwrapped":     "SaveTwice",
	"partial-visible":     "FailingSource",
	"ignore-length":       "ShortSource",
	"ignore-context":      "CanceledSave",
	"ignore-offset":       "RangedLoad",
	"length0-empty":       "RoundTrip",
	"short-range-ok":      "RangePastEnd",
	"range-not-permanent": "RangePastEnd",
	"range-is-not-exist":  "RangePastEnd",
	"off-by-one-end":      "RangedLoad",
	"stat-wrong-size":     "RoundTrip",
	"notexist-unwrapped":  "Missing",
	"list-invalid":        "ListSkipsInvalidNames",
	"list-swallows-error": "ListCallbackError",
	"list-all-types":      "List",
	"remove-missing-nil":  "Remove",
}

const defectEnv = "BACKENDTEST_DEFECT"

// TestBrokenBackend runs the contract against one broken backend; it only
// runs inside TestContractCatchesDefects, which expects it to fail.
func TestBrokenBackend(t *testing.T) {
	defect := os.Getenv(defectEnv)
	if defect == "" {
		t.Skip("run by TestContractCatchesDefects")
	}
	backendtest.RunContract(t, func(t *testing.T) backend.Backend {
		return &broken{Backend: mem.New(), defect: defect}
	})
}

func TestContractCatchesDefects(t *testing.T) {
	if os.Getenv(defectEnv) != "" {
		t.Skip("inside a defect run")
	}
	if testing.Short() {
		t.Skip("starts one test process per defect")
	}
	for defect, subtest := range defects {
		t.Run(defect, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenBackend$", "-test.v")
			cmd.Env = append(os.Environ(), defectEnv+"="+defect)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the contract passed a backend with defect %q (err %v):\n%s", defect, err, out)
			}
			if want := "--- FAIL: TestBrokenBackend/" + subtest + " "; !strings.Contains(string(out), want) {
				t.Errorf("defect %q was not caught by %s:\n%s", defect, subtest, out)
			}
		})
	}
}

// TestContractPassesMem makes sure the wrapper itself, without a defect,
// passes: the defects above are the only reason for the failures.
func TestContractPassesMem(t *testing.T) {
	backendtest.RunContract(t, func(t *testing.T) backend.Backend {
		return &broken{Backend: mem.New(), defect: "none"}
	})
}

func TestGenSourceIsAStream(t *testing.T) {
	read := func(chunk int) []byte {
		src := &backendtest.GenSource{Size: 100_000, Seed: [32]byte{7}}
		var out []byte
		buf := make([]byte, chunk)
		for {
			n, err := src.Read(buf)
			out = append(out, buf[:n]...)
			if err == io.EOF {
				return out
			}
		}
	}
	a, b, c := read(1), read(4096), read(77_777)
	if len(a) != 100_000 || !bytes.Equal(a, b) || !bytes.Equal(a, c) {
		t.Fatal("GenSource output depends on read sizes")
	}
	src := &backendtest.GenSource{Size: 10, Seed: [32]byte{7}}
	first, _ := io.ReadAll(src)
	if err := src.Rewind(); err != nil {
		t.Fatal(err)
	}
	again, _ := io.ReadAll(src)
	if !bytes.Equal(first, again) || !bytes.Equal(first, a[:10]) {
		t.Fatal("Rewind does not restart the stream")
	}
}
