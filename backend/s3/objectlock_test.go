package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// The backend keeps its contract on a versioned bucket (Object Lock
// enabled, objects written without retention): reads, listings and
// removals behave as on a plain bucket.
func TestContractVersionedBucket(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3With(t, testenv.S3Options{Versioning: true})
	backendtest.RunContract(t, func(t *testing.T) backend.Backend {
		bucket := newBucket("versioned")
		be := create(t, config(t, srv, srv.URL(bucket)))
		// Made without Object Lock by create: remake it with.
		if err := be.client.RemoveBucket(context.Background(), bucket); err != nil {
			t.Fatal(err)
		}
		if err := be.client.MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{ObjectLocking: true}); err != nil {
			t.Fatal(err)
		}
		return be
	})
}

// With a retention Content-MD5 is sent beside a signed SHA-256, as Object
// Lock requires (AWS, B2): a wrong one is refused.
func TestObjectLockSendsMD5(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3With(t, testenv.S3Options{Versioning: true})
	cfg := config(t, srv, srv.URL(newBucket("lockmd5")))
	cfg.Retention = time.Second
	be := create(t, cfg)
	data := []byte("a locked pack's bytes")
	goodMD5, goodSHA := md5.Sum(data), sha256.Sum256(data)
	otherMD5 := md5.Sum([]byte("other"))
	src := badDigests(t, be, data, [][2][]byte{{otherMD5[:], goodSHA[:]}}, [2][]byte{goodMD5[:], goodSHA[:]})
	if src.md5Calls == 0 {
		t.Error("no MD5 asked for under a retention")
	}
}

// With a retention: a locked version refuses Remove with
// ErrDeleteRefused and its end; RetainUntil and ExtendRetention work; once
// the lock ends Remove deletes every version a retried upload left.
func TestObjectLockRemove(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3With(t, testenv.S3Options{Versioning: true})
	ctx := context.Background()
	cfg := config(t, srv, srv.URL(newBucket("locked")))
	cfg.Retention = 3 * time.Second
	be := create(t, cfg)
	data := []byte("a pack's bytes")
	h := backend.Handle{Type: backend.PackFile, Name: idOf(data)}
	for i := 0; i < 2; i++ { // a retried upload: two versions
		if err := be.Save(ctx, h, backend.BytesSource(data)); err != nil {
			t.Fatal(err)
		}
	}
	until, err := be.RetainUntil(ctx, h)
	if err != nil || !until.After(time.Now()) {
		t.Fatalf("RetainUntil: %v, %v", until, err)
	}
	err = be.Remove(ctx, h)
	got, refused := backend.RefusedUntil(err)
	if !refused || !got.Equal(until) || !backend.IsPermanent(err) {
		t.Fatalf("Remove of a locked version: %v (refused %v, until %v, want %v)", err, refused, got, until)
	}
	if err := be.ExtendRetention(ctx, h, until.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if later, err := be.RetainUntil(ctx, h); err != nil || !later.After(until) {
		t.Fatalf("after ExtendRetention: %v, %v; want after %v", later, err, until)
	}
	// Locks have no retention.
	lock := backend.Handle{Type: backend.LockFile, Name: idOf([]byte("lock"))}
	if err := be.Save(ctx, lock, backend.BytesSource([]byte("lock"))); err != nil {
		t.Fatal(err)
	}
	if err := be.Remove(ctx, lock); err != nil {
		t.Fatalf("Remove of a lock file: %v", err)
	}
	time.Sleep(time.Until(until.Add(2500 * time.Millisecond)))
	if err := be.Remove(ctx, h); err != nil {
		t.Fatalf("Remove after the lock ended: %v", err)
	}
	if _, err := be.Stat(ctx, h); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("after Remove: %v, want not found (no older version left current)", err)
	}
	n := 0
	for o := range be.client.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		n++
	}
	if n != 0 {
		t.Errorf("%d versions left after Remove", n)
	}
	// Reading a retention on a bucket without Object Lock: unsupported.
	plain := create(t, config(t, srv, srv.URL(newBucket("plain"))))
	if _, err := plain.RetainUntil(ctx, h); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("RetainUntil on a plain bucket: %v", err)
	}
	// s3.retention on an existing bucket without Object Lock: refused.
	cfg2 := plain.cfg
	cfg2.Retention = time.Hour
	b2, err := Open(ctx, cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Create(ctx); err == nil || !bytes.Contains([]byte(err.Error()), []byte("without Object Lock")) {
		t.Fatalf("Create with retention on a plain bucket: %v", err)
	}
}
