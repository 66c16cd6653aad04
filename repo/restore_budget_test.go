package repo

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/internal/bench"
)

// loadRecorder is a backend that remembers every ranged load of a pack.
type loadRecorder struct {
	backend.Backend
	mu    sync.Mutex
	loads []recordedLoad
}

type recordedLoad struct {
	pack           string
	offset, length int64
}

func (b *loadRecorder) Load(ctx context.Context, h backend.Handle, length int, offset int64) (io.ReadCloser, error) {
	if h.Type == backend.PackFile {
		b.mu.Lock()
		b.loads = append(b.loads, recordedLoad{h.Name, offset, int64(length)})
		b.mu.Unlock()
	}
	return b.Backend.Load(ctx, h, length, offset)
}

func (b *loadRecorder) snapshot() []recordedLoad {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]recordedLoad(nil), b.loads...)
}

// textFile backs up size bytes of COPY-like text (it compresses to about
// a third) and returns the file's node and the text's SHA-256.
func textFile(t *testing.T, r *Repository, size int64) (*Node, [32]byte) {
	t.Helper()
	ctx := context.Background()
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(bench.NewTextGenerator(bench.DefaultSeed), size), h)
	res, err := r.BackupStream(ctx, Stream{Name: "text.dump", Reader: src}, BackupOptions{Hostname: "test"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.FindNode(ctx, res.Snapshot, "/text.dump")
	if err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return n, sum
}

// A reader that is not being read fetches ahead no more than readBudget
// bytes of plaintext. The budget used to count ranges of up to 8 MiB
// stored: on text that compresses to a third, six of them held about
// 150 MiB of plaintext.
func TestFileReaderReadAheadBudget(t *testing.T) {
	ctx := context.Background()
	rec := &loadRecorder{Backend: mem.New()}
	r, err := Init(ctx, rec, "pw", InitOptions{KDF: testKDF}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const size = 160 << 20
	node, want := textFile(t, r, size)

	idx, err := r.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stored int64
	for _, id := range node.Content {
		pb, _ := idx.Lookup(BlobHandle{ID: id, Type: DataBlob})
		stored += int64(pb.Length)
	}
	if stored*2 > size {
		t.Fatalf("the text stored %d bytes for %d: not compressible enough to test the budget", stored, size)
	}

	before := len(rec.snapshot())
	fr, err := r.OpenFile(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	// Nothing reads: the prefetchers run until the budget stops them.
	var loads []recordedLoad
	for stable, deadline := 0, time.Now().Add(10*time.Second); stable < 10 && time.Now().Before(deadline); {
		time.Sleep(30 * time.Millisecond)
		now := rec.snapshot()[before:]
		if len(now) == len(loads) {
			stable++
		} else {
			stable = 0
		}
		loads = now
	}
	var held int64
	for _, id := range node.Content {
		pb, _ := idx.Lookup(BlobHandle{ID: id, Type: DataBlob})
		for _, l := range loads {
			if l.pack == pb.PackID.String() && int64(pb.Offset) >= l.offset && int64(pb.Offset) < l.offset+l.length {
				held += int64(pb.DataLength())
			}
		}
	}
	t.Logf("unread reader: %d ranges loaded, %d MiB of plaintext (budget %d MiB)", len(loads), held>>20, readBudget>>20)
	if len(loads) == 0 || held > readBudget {
		t.Fatalf("an unread reader loaded %d ranges holding %d bytes of plaintext; want some, at most %d", len(loads), held, readBudget)
	}

	// Read through WriteTo (io.Copy): every byte, in order.
	h := sha256.New()
	n, err := io.Copy(h, fr)
	if err != nil || n != size {
		t.Fatalf("read %d of %d bytes: %v", n, size, err)
	}
	if [32]byte(h.Sum(nil)) != want {
		t.Fatal("the file read back differs from what was stored")
	}
}

// failAfter accepts limit bytes, then fails.
type failAfter struct {
	limit, n int64
}

var errWriterFull = errors.New("writer full")

func (w *failAfter) Write(p []byte) (int, error) {
	if w.n+int64(len(p)) > w.limit {
		k := int(w.limit - w.n)
		w.n = w.limit
		return k, errWriterFull
	}
	w.n += int64(len(p))
	return len(p), nil
}

// WriteTo and Read give the same bytes, and WriteTo stops at a failing
// writer with the count it accepted; the reader then fails no further.
func TestFileReaderWriteTo(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t, 0, Options{})
	const size = 24 << 20
	node, want := textFile(t, r, size)

	fr, err := r.OpenFile(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	// Read only (io.ReadAll never uses WriteTo), in odd-sized pieces.
	h := sha256.New()
	buf := make([]byte, 12345)
	var total int64
	for {
		n, err := fr.Read(buf)
		h.Write(buf[:n])
		total += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	fr.Close()
	if total != size || [32]byte(h.Sum(nil)) != want {
		t.Fatalf("Read gave %d bytes, hash match %v", total, [32]byte(h.Sum(nil)) == want)
	}

	fr, err = r.OpenFile(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	w := &failAfter{limit: 5<<20 + 17}
	n, err := fr.WriteTo(w)
	if !errors.Is(err, errWriterFull) || n != w.limit {
		t.Fatalf("WriteTo into a writer that takes %d bytes: %d, %v", w.limit, n, err)
	}
	// The rest still reads, from where the writer stopped.
	rest, err := io.ReadAll(fr)
	if err != nil || int64(len(rest)) != size-n {
		t.Fatalf("after the failed write: %d bytes, %v; want %d", len(rest), err, size-n)
	}
}
