package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// These tests run against versitygw (scripts/install-versitygw.sh); they
// are skipped under -short and when the binary is missing (failed with
// SCALR_BACKUP_REQUIRE_INTEGRATION=1).

var bucketSeq atomic.Int64

// newBucket returns a fresh bucket name.
func newBucket(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e6, bucketSeq.Add(1))
}

// config is the configuration of location (an "s3:" string) with the
// server's credentials.
func config(t testing.TB, srv *testenv.S3Server, location string) Config {
	t.Helper()
	cfg, err := ParseConfig(strings.TrimPrefix(location, "s3:"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ApplyEnv(srv.Getenv)
	return cfg
}

// create opens cfg and makes its bucket.
func create(t testing.TB, cfg Config) *Backend {
	t.Helper()
	be, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Create(context.Background()); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return be
}

func idOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func randomData(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestContract(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	backendtest.RunContract(t, func(t *testing.T) backend.Backend {
		return create(t, config(t, srv, srv.URL(newBucket("contract"))))
	})
}

// The decorators keep the contract over S3, in a prefix, and with one
// connection (List must not hold it while fn runs).
func TestContractDecorated(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	backendtest.RunContract(t, func(t *testing.T) backend.Backend {
		cfg := config(t, srv, srv.URL(newBucket("decorated"))+"/restic/repo")
		be := create(t, cfg)
		return backend.NewRetry(backend.NewCounting(be), backend.RetryOptions{InitialDelay: time.Millisecond})
	})
}

func TestLayout(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	bucket := newBucket("layout")
	be := create(t, config(t, srv, srv.URL(bucket)+"/pre/fix"))
	ctx := context.Background()
	data := []byte("pack")
	id := idOf(data)
	for _, h := range []backend.Handle{{Type: backend.ConfigFile}, {Type: backend.PackFile, Name: id}, {Type: backend.KeyFile, Name: id}} {
		if err := be.Save(ctx, h, backend.BytesSource(data)); err != nil {
			t.Fatal(err)
		}
	}
	// Look at the keys with a backend on the bucket's root.
	root := create(t, config(t, srv, srv.URL(bucket)))
	var keys []string
	for obj := range root.client.ListObjectsIter(ctx, bucket, listAll()) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	want := []string{"pre/fix/config", "pre/fix/data/" + id[:2] + "/" + id, "pre/fix/keys/" + id}
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	if loc := be.Location(); loc != srv.URL(bucket)+"/pre/fix" || strings.Contains(loc, srv.Secret) {
		t.Errorf("Location() = %q", loc)
	}
}

func TestWrongSecret(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	loc := srv.URL(newBucket("auth"))
	create(t, config(t, srv, loc))

	for _, tc := range []struct {
		name   string
		mod    func(*Config)
		status int
	}{
		{"wrong secret", func(c *Config) { c.Secret = "wrong-" + c.Secret }, 403},
		// versitygw answers an unknown key with 404 XAdminUserNotFound
		// (AWS, R2 and B2: 403 InvalidAccessKeyId); a HEAD's 404 then
		// cannot be told from a missing object, so Stat is not checked.
		{"wrong key", func(c *Config) { c.KeyID = "NOSUCHKEY" }, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(t, srv, loc)
			tc.mod(&cfg)
			be, err := Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			counting := backend.NewCounting(be)
			var reports atomic.Int64
			rb := backend.NewRetry(counting, backend.RetryOptions{
				InitialDelay: time.Millisecond,
				Report:       func(string, backend.Handle, int, error) { reports.Add(1) },
			})
			ctx := context.Background()
			data := []byte("data")
			h := backend.Handle{Type: backend.PackFile, Name: idOf(data)}

			secrets := []string{cfg.Secret, srv.Secret}
			err = rb.Save(ctx, h, backend.BytesSource(data))
			checkAuthError(t, "Save", err, tc.status, h.String(), secrets)
			_, err = rb.Stat(ctx, h)
			if tc.status == 403 {
				checkAuthError(t, "Stat", err, tc.status, h.String(), secrets)
			}
			err = rb.List(ctx, backend.SnapshotFile, func(backend.FileInfo) error { return nil })
			checkAuthError(t, "List", err, tc.status, "snapshots/", secrets)
			err = be.Create(ctx)
			checkAuthError(t, "Create", err, tc.status, "", secrets)

			if got := counting.Snapshot(); got.Saves != 1 || got.Stats != 1 || got.ListPages != 1 || reports.Load() != 0 {
				t.Errorf("counts %+v and %d retry reports: want one attempt each, no retries", got, reports.Load())
			}
		})
	}
}

func checkAuthError(t *testing.T, op string, err error, status int, key string, secrets []string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s with bad credentials: no error", op)
		return
	}
	t.Logf("%s: %v", op, err)
	if !backend.IsPermanent(err) {
		t.Errorf("%s: error is not permanent: %v", op, err)
	}
	var se *Error
	if !errors.As(err, &se) || se.Status != status {
		t.Errorf("%s: error carries no HTTP %d: %v", op, status, err)
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprint(status), key, "AWS_SECRET_ACCESS_KEY"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%s: error %q does not mention %q", op, msg, want)
		}
	}
	if errors.Is(err, backend.ErrNotExist) {
		t.Errorf("%s: an auth error claims a missing file: %v", op, err)
	}
	if strings.Contains(msg, "attempts") {
		t.Errorf("%s: error says it was retried: %q", op, msg)
	}
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			t.Errorf("%s: error shows a secret: %q", op, msg)
		}
	}
}

func TestFaultyNetwork(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	bucket := newBucket("faults")
	create(t, config(t, srv, srv.URL(bucket)))

	proxy := testenv.StartFaultProxy(t, srv.Endpoint, 42)
	be, err := Open(context.Background(), config(t, srv, proxy.URL(bucket)))
	if err != nil {
		t.Fatal(err)
	}
	counting := backend.NewCounting(be)
	rb := backend.NewRetry(counting, backend.RetryOptions{
		InitialDelay: 5 * time.Millisecond,
		MaxDelay:     100 * time.Millisecond,
		MaxAttempts:  20,
		Report:       counting.ReportRetry,
	})
	proxy.SetFailureRate(0.10) // every kind of fault

	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	const files = 100
	contents := make([][]byte, files)
	for i := range contents {
		contents[i] = randomData(r, 1000+r.IntN(300_000))
	}
	var wg sync.WaitGroup
	errc := make(chan error, 2*files)
	sem := make(chan struct{}, 8)
	for _, data := range contents {
		wg.Add(1)
		sem <- struct{}{}
		go func(data []byte) {
			defer func() { <-sem; wg.Done() }()
			h := backend.Handle{Type: backend.PackFile, Name: idOf(data)}
			if err := rb.Save(ctx, h, backend.BytesSource(data)); err != nil {
				errc <- err
				return
			}
			got, err := backend.LoadAll(ctx, rb, h)
			if err != nil {
				errc <- err
			} else if !bytes.Equal(got, data) {
				errc <- fmt.Errorf("load %v: content differs", h)
			}
			off := len(data) / 3
			rd, err := rb.Load(ctx, h, 777, int64(off))
			if err != nil {
				errc <- err
				return
			}
			part, err := io.ReadAll(rd)
			rd.Close()
			if err != nil || !bytes.Equal(part, data[off:off+777]) {
				errc <- fmt.Errorf("ranged load %v: %v or wrong bytes", h, err)
			}
		}(data)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	n := 0
	if err := rb.List(ctx, backend.PackFile, func(backend.FileInfo) error { n++; return nil }); err != nil {
		t.Error(err)
	}
	if n != files {
		t.Errorf("listed %d packs, want %d", n, files)
	}
	got := counting.Snapshot()
	t.Logf("proxy: %d requests, %d faults injected; counts %+v", proxy.Requests(), proxy.Faults(), got)
	if proxy.Faults() == 0 || got.Retries == 0 {
		t.Errorf("no faults or retries: %d faults, counts %+v", proxy.Faults(), got)
	}
	if got.Saves < files || got.Loads < 2*files {
		t.Errorf("counts %+v: want at least %d saves and %d loads", got, files, 2*files)
	}
}

func TestFailEverything(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	bucket := newBucket("down")
	create(t, config(t, srv, srv.URL(bucket)))
	proxy := testenv.StartFaultProxy(t, srv.Endpoint, 7)

	for _, fault := range []testenv.Fault{testenv.FaultUnavailable, testenv.FaultTooManyRequests, testenv.FaultReset} {
		t.Run(fault.String(), func(t *testing.T) {
			proxy.FailAll(true, fault)
			be, err := Open(context.Background(), config(t, srv, proxy.URL(bucket)))
			if err != nil {
				t.Fatal(err)
			}
			counting := backend.NewCounting(be)
			// The attempt bound is the one that triggers here; the time
			// bound has its own unit test.
			rb := backend.NewRetry(counting, backend.RetryOptions{
				MaxAttempts:  5,
				MaxElapsed:   time.Minute,
				InitialDelay: 10 * time.Millisecond,
				MaxDelay:     50 * time.Millisecond,
			})
			data := []byte("never stored")
			h := backend.Handle{Type: backend.IndexFile, Name: idOf(data)}
			start := time.Now()
			err = rb.Save(context.Background(), h, backend.BytesSource(data))
			took := time.Since(start)
			t.Logf("after %v: %v", took, err)
			if err == nil {
				t.Fatal("Save succeeded through a proxy failing everything")
			}
			if took > 20*time.Second {
				t.Errorf("gave up after %v", took)
			}
			if got := counting.Snapshot().Saves; got != 5 {
				t.Errorf("%d attempts, want 5", got)
			}
			msg := err.Error()
			for _, want := range []string{"save", h.String(), "5 attempts"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("no *s3.Error in the chain: %v", err)
			}
			if fault == testenv.FaultReset {
				if se.Status != 0 {
					t.Errorf("status %d for a reset connection", se.Status)
				}
			} else {
				status := map[testenv.Fault]int{testenv.FaultUnavailable: 503, testenv.FaultTooManyRequests: 429}[fault]
				if se.Status != status || !strings.Contains(msg, fmt.Sprint(status)) {
					t.Errorf("error status %d (%q), want %d", se.Status, msg, status)
				}
			}
		})
	}
	// Once the network is back, the same backend works.
	proxy.FailAll(false)
	be, _ := Open(context.Background(), config(t, srv, proxy.URL(bucket)))
	data := []byte("stored at last")
	if err := be.Save(context.Background(), backend.Handle{Type: backend.IndexFile, Name: idOf(data)}, backend.BytesSource(data)); err != nil {
		t.Errorf("Save after recovery: %v", err)
	}
}

// A body cut off mid-way is resumed where it stopped, not failed.
func TestLoadResumesMidBody(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	bucket := newBucket("resume")
	direct := create(t, config(t, srv, srv.URL(bucket)))
	data := randomData(rand.New(rand.NewPCG(5, 6)), 5<<20)
	h := backend.Handle{Type: backend.PackFile, Name: idOf(data)}
	if err := direct.Save(context.Background(), h, backend.BytesSource(data)); err != nil {
		t.Fatal(err)
	}

	proxy := testenv.StartFaultProxy(t, srv.Endpoint, 11)
	proxy.SetFailureRate(0.5, testenv.FaultReset) // GETs are cut half-way through the body
	be, err := Open(context.Background(), config(t, srv, proxy.URL(bucket)))
	if err != nil {
		t.Fatal(err)
	}
	counting := backend.NewCounting(be)
	rb := backend.NewRetry(counting, backend.RetryOptions{InitialDelay: time.Millisecond, MaxAttempts: 40})
	const loads = 6
	for i := 0; i < loads; i++ {
		got, err := backend.LoadAll(context.Background(), rb, h)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("load %d: content differs", i)
		}
	}
	c := counting.Snapshot()
	t.Logf("%d faults; counts %+v", proxy.Faults(), c)
	if c.Errors != 0 || c.Loads <= loads || proxy.Faults() == 0 {
		t.Errorf("counts %+v: want no failed opens and more opens than the %d loads (resumed bodies)", c, loads)
	}
}

func TestLargeObject(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	const size = 40 << 20
	seed := [32]byte{4, 0}
	want := make([]byte, size)
	if _, err := io.ReadFull(&backendtest.GenSource{Size: size, Seed: seed}, want); err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.PackFile, Name: idOf(want)}

	for _, multipart := range []bool{false, true} {
		t.Run(fmt.Sprintf("multipart=%v", multipart), func(t *testing.T) {
			be := create(t, config(t, srv, srv.URL(newBucket("large"))))
			if multipart {
				be.singlePutMax, be.partSize = 16<<20, 6<<20
			}
			ctx := context.Background()
			// A source that knows its MD5 exercises Content-MD5; the
			// generator streams without one.
			var src backend.Source = &backendtest.GenSource{Size: size, Seed: seed}
			if !multipart {
				src = &md5Source{GenSource: backendtest.GenSource{Size: size, Seed: seed}, sum: md5.Sum(want)}
			}
			if err := be.Save(ctx, h, src); err != nil {
				t.Fatalf("Save: %v", err)
			}
			fi, err := be.Stat(ctx, h)
			if err != nil || fi.Size != size {
				t.Fatalf("Stat: %+v, %v", fi, err)
			}
			rd, err := be.Load(ctx, h, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			hash := sha256.New()
			n, err := io.Copy(hash, rd)
			rd.Close()
			if err != nil || n != size || hex.EncodeToString(hash.Sum(nil)) != h.Name {
				t.Fatalf("full read: %d bytes, %v, hash %x", n, err, hash.Sum(nil))
			}
			for _, c := range []struct {
				length int
				offset int64
			}{
				{1 << 20, 16<<20 - 1000},
				{0, size - 12345},
				{36, size - 36},
				{1, 0},
				{8 << 20, 31 << 20},
			} {
				rd, err := be.Load(ctx, h, c.length, c.offset)
				if err != nil {
					t.Fatalf("Load(%d, %d): %v", c.length, c.offset, err)
				}
				got, err := io.ReadAll(rd)
				rd.Close()
				end := int64(size)
				if c.length > 0 {
					end = c.offset + int64(c.length)
				}
				if err != nil || !bytes.Equal(got, want[c.offset:end]) {
					t.Errorf("Load(%d, %d): %d bytes, %v, content differs", c.length, c.offset, len(got), err)
				}
			}
		})
	}
}

type md5Source struct {
	backendtest.GenSource
	sum [16]byte
}

func (s *md5Source) MD5() []byte { return s.sum[:] }

// digestSource reports the digests it is given (nil: unknown) and counts
// the calls for its MD5.
type digestSource struct {
	backend.Source
	md5, sha256 []byte
	md5Calls    int
}

func (s *digestSource) MD5() []byte    { s.md5Calls++; return s.md5 }
func (s *digestSource) SHA256() []byte { return s.sha256 }

// badDigests saves data to be under digests that do not match it, each of
// which the server must refuse (permanently, storing nothing), then with
// right ones (stored). It returns the source of the good save.
func badDigests(t *testing.T, be *Backend, data []byte, bad [][2][]byte, good [2][]byte) *digestSource {
	t.Helper()
	h := backend.Handle{Type: backend.PackFile, Name: idOf(data)}
	for _, d := range bad {
		err := be.Save(context.Background(), h, &digestSource{Source: backend.BytesSource(data), md5: d[0], sha256: d[1]})
		t.Logf("Save with MD5 %x, SHA-256 %x: %v", d[0], d[1], err)
		if err == nil || !backend.IsPermanent(err) {
			t.Errorf("Save with MD5 %x, SHA-256 %x: %v, want a permanent error", d[0], d[1], err)
		}
		if _, err := be.Stat(context.Background(), h); !errors.Is(err, backend.ErrNotExist) {
			t.Errorf("Stat after a refused Save: %v", err)
		}
	}
	src := &digestSource{Source: backend.BytesSource(data), md5: good[0], sha256: good[1]}
	if err := be.Save(context.Background(), h, src); err != nil {
		t.Fatalf("Save with MD5 %x, SHA-256 %x: %v", good[0], good[1], err)
	}
	if got, err := backend.LoadAll(context.Background(), be, h); err != nil || !bytes.Equal(got, data) {
		t.Errorf("Load after the good Save: %q, %v", got, err)
	}
	return src
}

// A wrong Content-MD5 (sent when no SHA-256 is known) or a wrong SHA-256
// of a signed payload is refused by the server and not retried. (A SHA-256
// the server did not check could not be refused: this is what shows the
// known digest is sent and checked.) Beside a signed SHA-256 no MD5 is
// computed or sent: a wrong one does not matter.
func TestBadDigest(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	be := create(t, config(t, srv, srv.URL(newBucket("digest"))))
	data := []byte("some data")
	goodMD5, goodSHA := md5.Sum(data), sha256.Sum256(data)
	otherMD5, otherSHA := md5.Sum([]byte("other")), sha256.Sum256([]byte("other"))
	src := badDigests(t, be, data, [][2][]byte{
		{otherMD5[:], nil},
		{goodMD5[:], otherSHA[:]},
		{nil, otherSHA[:]},
	}, [2][]byte{otherMD5[:], goodSHA[:]})
	if src.md5Calls != 0 {
		t.Errorf("MD5 asked for %d times beside a known SHA-256", src.md5Calls)
	}
}

func TestListPages(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	be := create(t, config(t, srv, srv.URL(newBucket("pages"))+"/p"))
	be.pageSize = 7
	ctx := context.Background()
	want := map[string]bool{}
	for i := 0; i < 20; i++ {
		data := []byte{byte(i)}
		for _, ft := range []backend.FileType{backend.PackFile, backend.SnapshotFile} {
			h := backend.Handle{Type: ft, Name: idOf(data)}
			if err := be.Save(ctx, h, backend.BytesSource(data)); err != nil {
				t.Fatal(err)
			}
		}
		want[idOf(data)] = true
	}
	c := backend.NewCounting(be)
	for _, ft := range []backend.FileType{backend.PackFile, backend.SnapshotFile} {
		got := map[string]bool{}
		err := c.List(ctx, ft, func(fi backend.FileInfo) error {
			if got[fi.Name] || fi.Size != 1 {
				t.Errorf("List(%v): %+v twice or wrong size", ft, fi)
			}
			got[fi.Name] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("List(%v): %d files, want %d", ft, len(got), len(want))
		}
	}
	if cnt := c.Snapshot(); cnt.Lists != 2 || cnt.ListPages != 6 {
		t.Errorf("counts %+v: want 2 lists of 3 pages (20 files, 7 per page)", cnt)
	}
}

func TestConnectionsLimit(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	bucket := newBucket("conns")
	seed := create(t, config(t, srv, srv.URL(bucket)))
	data := []byte("x")
	h := backend.Handle{Type: backend.LockFile, Name: idOf(data)}
	if err := seed.Save(context.Background(), h, backend.BytesSource(data)); err != nil {
		t.Fatal(err)
	}

	proxy := testenv.StartFaultProxy(t, srv.Endpoint, 1)
	proxy.SetLatency(30 * time.Millisecond)
	cfg := config(t, srv, proxy.URL(bucket))
	if err := cfg.ApplyOption("s3.connections", "2"); err != nil {
		t.Fatal(err)
	}
	be, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := be.Stat(context.Background(), h); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if peak := proxy.PeakInFlight(); peak > 2 || proxy.Requests() != 12 {
		t.Errorf("%d requests, at most %d at once; want 12 and 2", proxy.Requests(), peak)
	}
}

func listAll() minio.ListObjectsOptions { return minio.ListObjectsOptions{Recursive: true} }
