package nightly

// Issue 14, acceptance 3: on versitygw with Object Lock, every nightly pass
// keeps the objects of the kept snapshots under retention ahead of now,
// and its PutObjectRetention requests are exactly the objects whose end it
// moved (one per object per half retention period, not one per pass).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

func TestPassExtendsRetention(t *testing.T) {
	testenv.Integration(t)
	start := time.Now()
	ctx := context.Background()
	srv := testenv.StartS3With(t, testenv.S3Options{Versioning: true})
	b := make([]byte, 4)
	rand.Read(b)
	bucket := "extend-" + hex.EncodeToString(b)
	const period = 8 * time.Second
	o, err := open.Create(ctx, srv.URL(bucket), open.Options{Getenv: srv.Getenv, Extended: []string{"s3.retention=8s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	r, err := repo.Init(ctx, o, "secret", repo.InitOptions{Version: 2, KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mc, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.KeyID, srv.Secret, ""), Region: testenv.S3Region})
	if err != nil {
		t.Fatal(err)
	}
	until := func(key string) time.Time {
		oi, err := mc.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatalf("HEAD %s: %v", key, err)
		}
		u, _ := time.Parse(time.RFC3339, oi.Headers.Get("X-Amz-Object-Lock-Retain-Until-Date"))
		return u
	}

	fb := &fakeBackup{host: "h1"}
	var totalExtended int64
	allUntil := func() map[string]time.Time {
		m := map[string]time.Time{}
		for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			if !strings.HasPrefix(o.Key, "locks/") {
				m[o.Key] = until(o.Key)
			}
		}
		return m
	}
	// Passes closer than half the period: an object extended in one pass
	// is not due in the next, so each costs one request every other pass.
	lastMoved := map[string]bool{}
	for pass := 1; pass <= 4; pass++ {
		before := allUntil()
		movedNow := map[string]bool{}
		rep := Pass(ctx, r, PassOptions{Discoverer: staticDiscoverer("scalr-app-db"), Backup: fb.fn, Host: "h1",
			Policy: repo.ExpirePolicy{Last: 2}, Logger: testLogger(t), Counting: o.Counts})
		if !rep.OK() || rep.Retention == nil {
			t.Fatalf("pass %d: ok %v, retention %+v, errors %v", pass, rep.OK(), rep.Retention, rep.Errors)
		}
		st := rep.Retention
		now := time.Now()
		// The objects the kept snapshots need, found here on their own;
		// of the index files, the extension picks a covering few.
		forgotten := map[string]bool{}
		for _, g := range rep.Forget.Groups {
			for _, id := range g.Removed {
				forgotten[id] = true
			}
		}
		needed := neededKeys(t, ctx, r, forgotten)
		index := indexKeys(t, ctx, r)
		if st.Objects != len(needed)+st.IndexFiles || st.IndexFiles < 1 || st.IndexFiles > len(index) {
			t.Errorf("pass %d: extension looked at %d objects (%d index files); the kept snapshots need %d besides index files, of which there are %d",
				pass, st.Objects, st.IndexFiles, len(needed), len(index))
		}
		moved, lockedIndex := 0, 0
		for _, key := range append(needed, index...) {
			u := until(key)
			ahead := u.After(now.Add(period/2 - time.Second))
			if strings.HasPrefix(key, "index/") {
				if ahead {
					lockedIndex++
				}
			} else if !ahead {
				t.Errorf("pass %d: %s locked until %s, less than half the period ahead of %s", pass, key, u.Format(time.TimeOnly), now.Format(time.TimeOnly))
			}
			if b, ok := before[key]; ok && !u.Equal(b) {
				moved++ // only objects that existed before the pass
				movedNow[key] = true
				if lastMoved[key] {
					t.Errorf("pass %d: %s extended in two passes in a row", pass, key)
				}
			}
		}
		if lockedIndex < st.IndexFiles {
			t.Errorf("pass %d: %d index files locked ahead, want at least the %d chosen", pass, lockedIndex, st.IndexFiles)
		}
		if rep.Requests.Stats < int64(st.Objects) {
			t.Errorf("pass %d: %d HEAD requests, fewer than the %d objects whose retention was read", pass, rep.Requests.Stats, st.Objects)
		}
		if int64(st.Extended) != rep.Requests.RetentionExtends || st.Extended != moved {
			t.Errorf("pass %d: %d PutObjectRetention requests counted, %d extended, %d objects whose end moved", pass, rep.Requests.RetentionExtends, st.Extended, moved)
		}
		if st.Extended > 0 && !strings.Contains(rep.Requests.String(), "retention extensions") {
			t.Errorf("pass %d: request summary does not show the extensions: %s", pass, rep.Requests)
		}
		totalExtended += rep.Requests.RetentionExtends
		t.Logf("pass %d: %d objects needed, %d extended; requests: %s", pass, st.Objects, st.Extended, rep.Requests)
		lastMoved = movedNow
		time.Sleep(period/4 + 500*time.Millisecond)
	}
	if totalExtended == 0 {
		t.Error("four passes extended nothing")
	}
	t.Logf("acceptance 3 in %s", time.Since(start).Round(time.Millisecond))
}

// neededKeys lists the object keys of config, the keys, every snapshot
// forget kept, and the packs holding their blobs (index files are chosen
// by the extension itself).
func neededKeys(t *testing.T, ctx context.Context, r *repo.Repository, forgotten map[string]bool) []string {
	t.Helper()
	keys := []string{"config"}
	if err := r.Backend().List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		keys = append(keys, "keys/"+fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	snaps, err := r.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := r.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	packs := map[repo.ID]bool{}
	var walk func(id repo.ID)
	walk = func(id repo.ID) {
		if pb, ok := idx.Lookup(repo.BlobHandle{ID: id, Type: repo.TreeBlob}); ok {
			packs[pb.PackID] = true
		}
		tree, err := r.LoadTree(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tree.Nodes {
			for _, c := range n.Content {
				if pb, ok := idx.Lookup(repo.BlobHandle{ID: c, Type: repo.DataBlob}); ok {
					packs[pb.PackID] = true
				}
			}
			if n.Subtree != nil {
				walk(*n.Subtree)
			}
		}
	}
	for _, sn := range snaps {
		if forgotten[sn.ID.String()] {
			continue // removal deferred: no longer kept
		}
		keys = append(keys, "snapshots/"+sn.ID.String())
		walk(*sn.Tree)
	}
	for id := range packs {
		keys = append(keys, backend.Handle{Type: backend.PackFile, Name: id.String()}.String())
	}
	return keys
}

// indexKeys lists index/.
func indexKeys(t *testing.T, ctx context.Context, r *repo.Repository) []string {
	t.Helper()
	var keys []string
	if err := r.Backend().List(ctx, backend.IndexFile, func(fi backend.FileInfo) error {
		keys = append(keys, "index/"+fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}
