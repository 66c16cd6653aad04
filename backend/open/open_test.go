package open_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

func handle(data []byte) backend.Handle {
	sum := sha256.Sum256(data)
	return backend.Handle{Type: backend.SnapshotFile, Name: hex.EncodeToString(sum[:])}
}

// roundTrip saves, lists and loads one file through be.
func roundTrip(t *testing.T, be *open.Opened) {
	t.Helper()
	ctx := context.Background()
	data := []byte(fmt.Sprintf("snapshot at %v", time.Now()))
	h := handle(data)
	if err := be.Save(ctx, h, backend.BytesSource(data)); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := be.List(ctx, backend.SnapshotFile, func(fi backend.FileInfo) error {
		n++
		return nil
	}); err != nil || n != 1 {
		t.Fatalf("List: %d files, %v", n, err)
	}
	got, err := backend.LoadAll(ctx, be, h)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("LoadAll: %q, %v", got, err)
	}
	c := be.Counts.Snapshot()
	if c.Saves != 1 || c.Loads != 1 || c.Lists != 1 || c.BytesUp != int64(len(data)) || c.BytesDown != int64(len(data)) {
		t.Errorf("counts %+v", c)
	}
}

func TestLocal(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")

	if _, err := open.Open(ctx, dir, open.Options{}); !errors.Is(err, backend.ErrNoRepository) {
		t.Errorf("Open of a missing directory: %v, want ErrNoRepository", err)
	}
	be, err := open.Create(ctx, "local:"+dir, open.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if be.Location() != "local:"+dir {
		t.Errorf("Location() = %q", be.Location())
	}
	roundTrip(t, be)
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, backend.BytesSource([]byte("config"))); err != nil {
		t.Fatal(err)
	}
	be.Close()

	// Now a repository: Open works, Create refuses at once.
	be, err = open.Open(ctx, dir, open.Options{})
	if err != nil {
		t.Fatal(err)
	}
	be.Close()
	start := time.Now()
	if _, err := open.Create(ctx, dir, open.Options{}); err == nil {
		t.Error("Create over an existing repository: no error")
	} else if time.Since(start) > time.Second {
		t.Errorf("Create over an existing repository was retried: %v", err)
	}

	if _, err := open.Open(ctx, dir, open.Options{Extended: []string{"s3.region=x"}}); err == nil {
		t.Error("an s3 option on a local repository: no error")
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		loc  string
		opts open.Options
	}{
		{"", open.Options{}},
		{"sftp:host", open.Options{}},
		{"sftp:host:/repo", open.Options{Extended: []string{"sftp.command=ssh host -s sftp"}}},
		{"sftp:host:/repo", open.Options{Extended: []string{"s3.region=x"}}},
		{"sftp://user:topsecret@host//repo", open.Options{}},
		{"s3:", open.Options{}},
		{"s3:host", open.Options{}},
		{"s3:https://host/bucket", open.Options{Getenv: func(string) string { return "" }}}, // no credentials
		{"s3:https://host/bucket", open.Options{Getenv: env, Extended: []string{"s3.connections=0"}}},
		{"s3:https://host/bucket", open.Options{Getenv: env, Extended: []string{"s3.storage-class=GLACIER"}}},
		{"s3:https://host/bucket", open.Options{Getenv: env, Extended: []string{"novalue"}}},
	} {
		if be, err := open.Open(ctx, tc.loc, tc.opts); err == nil {
			t.Errorf("Open(%q, %v): no error", tc.loc, tc.opts.Extended)
			be.Close()
		} else if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("Open(%q): error shows the secret: %v", tc.loc, err)
		}
	}
}

// An SFTP location opens without a connection: the first operation
// connects, inside the retries.
func TestSFTPOpensLazily(t *testing.T) {
	be, err := open.Open(context.Background(), "sftp:nobody@host.invalid:/repo", open.Options{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if be.Location() != "sftp:nobody@host.invalid:/repo" {
		t.Errorf("Location() = %q", be.Location())
	}
}

func env(k string) string {
	return map[string]string{"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "topsecret"}[k]
}

func TestS3(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartS3(t)
	ctx := context.Background()
	loc := srv.URL(fmt.Sprintf("open-%d", time.Now().UnixNano()%1e9)) + "/repo"
	opts := open.Options{Getenv: srv.Getenv, Extended: []string{"s3.connections=3", "s3.bucket-lookup=path"}}

	be, err := open.Create(ctx, loc, opts)
	if err != nil {
		t.Fatal(err)
	}
	if be.Location() != loc || strings.Contains(be.Location(), srv.Secret) {
		t.Errorf("Location() = %q, want %q", be.Location(), loc)
	}
	roundTrip(t, be)
	be.Close()

	// Through a flaky network: retries happen, are counted, and reported.
	proxy := testenv.StartFaultProxy(t, srv.Endpoint, 3)
	proxy.SetFailureRate(0.5, testenv.FaultUnavailable)
	var reports atomic.Int64
	opts.Retry = backend.RetryOptions{
		InitialDelay: time.Millisecond,
		MaxAttempts:  30,
		Report:       func(string, backend.Handle, int, error) { reports.Add(1) },
	}
	bucketAndPrefix := strings.TrimPrefix(loc, "s3:http://"+srv.Endpoint)
	be, err = open.Open(ctx, "s3:http://"+proxy.Endpoint+bucketAndPrefix, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	for i := 0; i < 10; i++ {
		data := []byte{byte(i)}
		if err := be.Save(ctx, handle(data), backend.BytesSource(data)); err != nil {
			t.Fatal(err)
		}
	}
	c := be.Counts.Snapshot()
	if c.Retries == 0 || c.Retries != reports.Load() || c.Saves != 10+c.Retries {
		t.Errorf("counts %+v, %d reports: want saves = 10 + retries = 10 + reports", c, reports.Load())
	}
}
