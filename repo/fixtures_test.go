package repo

// Library-level reading of the committed fixture repositories written by
// restic 0.14 and 0.18.1 (testdata/fixtures.json describes them): snapshots,
// a walk of every tree, every file's bytes, and every pack header against
// the index. Needs no tools, so it is not an integration test.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/local"
)

const fxDir = "../testdata"

type fxNode struct {
	Path       string    `json:"path"`
	PathHex    string    `json:"path_hex"`
	Type       string    `json:"type"`
	Mode       uint32    `json:"mode"`
	MTime      time.Time `json:"mtime"`
	Size       uint64    `json:"size"`
	SHA256     string    `json:"sha256"`
	Content    []string  `json:"content"`
	LinkTarget string    `json:"linktarget"`
}

type fxSnapshot struct {
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Tree     string    `json:"tree"`
	Paths    []string  `json:"paths"`
	Hostname string    `json:"hostname"`
	Username string    `json:"username"`
	Tags     []string  `json:"tags"`
	Nodes    []fxNode  `json:"nodes"`
}

type fxRepo struct {
	Name         string `json:"name"`
	PasswordFile string `json:"password_file"`
	Config       struct {
		Polynomial string `json:"chunker_polynomial"`
		ID         string `json:"id"`
		Version    uint   `json:"version"`
	} `json:"config"`
	Snapshots []fxSnapshot `json:"snapshots"`
}

func (n fxNode) path(t *testing.T) string {
	if n.PathHex == "" {
		return n.Path
	}
	raw, err := hex.DecodeString(n.PathHex)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// TestFixtureReposWalk opens a copy of every fixture repository through
// backend/local and reads everything in it.
func TestFixtureReposWalk(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fxDir, "fixtures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Repos []fxRepo `json:"repos"`
	}
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Repos) == 0 {
		t.Fatal("fixtures.json lists no repositories")
	}
	for _, fr := range fx.Repos {
		t.Run(fr.Name, func(t *testing.T) {
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), fr.Name)
			if err := os.CopyFS(dir, os.DirFS(filepath.Join(fxDir, fr.Name))); err != nil {
				t.Fatal(err)
			}
			pw, err := os.ReadFile(filepath.Join(fxDir, fr.PasswordFile))
			if err != nil {
				t.Fatal(err)
			}
			be, err := local.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Open(ctx, be, strings.TrimRight(string(pw), "\n"), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()

			cfg := r.Config()
			if cfg.ID != fr.Config.ID || cfg.Version != fr.Config.Version {
				t.Errorf("config: id %s version %d; fixtures.json says id %s version %d", cfg.ID, cfg.Version, fr.Config.ID, fr.Config.Version)
			}

			list, err := r.ListSnapshots(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var gotIDs, wantIDs []string
			byID := map[string]*Snapshot{}
			for _, sn := range list {
				gotIDs = append(gotIDs, sn.ID.String())
				byID[sn.ID.String()] = sn
			}
			for _, s := range fr.Snapshots {
				wantIDs = append(wantIDs, s.ID)
			}
			slices.Sort(gotIDs)
			slices.Sort(wantIDs)
			if !slices.Equal(gotIDs, wantIDs) {
				t.Fatalf("snapshots %v, fixtures.json says %v", gotIDs, wantIDs)
			}

			for _, s := range fr.Snapshots {
				sn := byID[s.ID]
				if !sn.Time.Equal(s.Time) || sn.Tree.String() != s.Tree || !slices.Equal(sn.Paths, s.Paths) ||
					sn.Hostname != s.Hostname || sn.Username != s.Username || !slices.Equal(sn.Tags, s.Tags) {
					t.Errorf("snapshot %.8s: got time %s tree %s paths %q host %q user %q tags %q; fixtures.json %+v",
						s.ID, sn.Time, sn.Tree, sn.Paths, sn.Hostname, sn.Username, sn.Tags, s)
				}

				walked := map[string]*Node{}
				err := r.Walk(ctx, *sn.Tree, func(p string, n *Node) error {
					if _, dup := walked[p]; dup {
						t.Errorf("snapshot %.8s: walk visits %q twice", s.ID, p)
					}
					walked[p] = n
					return nil
				})
				if err != nil {
					t.Fatalf("snapshot %.8s: walk: %v", s.ID, err)
				}
				want := map[string]fxNode{}
				for _, n := range s.Nodes {
					want[n.path(t)] = n
				}
				for p := range walked {
					if _, ok := want[p]; !ok {
						t.Errorf("snapshot %.8s: walk finds %q, fixtures.json does not list it", s.ID, p)
					}
				}
				for p, w := range want {
					n, ok := walked[p]
					if !ok {
						t.Errorf("snapshot %.8s: %q not found by the walk", s.ID, p)
						continue
					}
					checkFixtureNode(t, r, s.ID, p, n, w)
				}
			}

			checkFixturePacks(t, r)
		})
	}
}

func checkFixtureNode(t *testing.T, r *Repository, snap, p string, n *Node, w fxNode) {
	t.Helper()
	ctx := context.Background()
	if n.Type != w.Type || n.Mode != fs.FileMode(w.Mode) || !n.ModTime.Equal(w.MTime) || n.LinkTarget != w.LinkTarget {
		t.Errorf("snapshot %.8s %q: type %s mode %d mtime %s link %q; fixtures.json type %s mode %d mtime %s link %q",
			snap, p, n.Type, n.Mode, n.ModTime, n.LinkTarget, w.Type, w.Mode, w.MTime, w.LinkTarget)
	}
	if n.Type != NodeFile {
		return
	}
	var content []string
	for _, id := range n.Content {
		content = append(content, id.String())
	}
	if n.Size != w.Size || !slices.Equal(content, w.Content) {
		t.Errorf("snapshot %.8s %q: size %d content %v; fixtures.json size %d content %v", snap, p, n.Size, content, w.Size, w.Content)
	}
	fr, err := r.OpenFile(ctx, n)
	if err != nil {
		t.Errorf("snapshot %.8s %q: open: %v", snap, p, err)
		return
	}
	defer fr.Close()
	h := sha256.New()
	size, err := io.Copy(h, fr)
	if err != nil {
		t.Errorf("snapshot %.8s %q: read: %v", snap, p, err)
		return
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != w.SHA256 || uint64(size) != w.Size {
		t.Errorf("snapshot %.8s %q: read %d bytes, sha256 %s; fixtures.json %d bytes, %s", snap, p, size, got, w.Size, w.SHA256)
	}
}

// checkFixturePacks reads every pack's header and compares it with the
// index, and loads every indexed blob.
func checkFixturePacks(t *testing.T, r *Repository) {
	t.Helper()
	ctx := context.Background()
	idx, err := r.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	packs := idx.PackBlobs()
	if len(packs) == 0 {
		t.Fatal("the index lists no packs")
	}
	for id, blobs := range packs {
		fi, err := r.Backend().Stat(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()})
		if err != nil {
			t.Errorf("pack %s: %v", id.Str(), err)
			continue
		}
		hdr, err := readPackHeader(ctx, r.Backend(), r.key, id, fi.Size)
		if err != nil {
			t.Errorf("pack %s: header: %v", id.Str(), err)
			continue
		}
		if !slices.Equal(hdr, blobs) {
			t.Errorf("pack %s: header %+v, index %+v", id.Str(), hdr, blobs)
		}
		if PackSize(hdr) != fi.Size {
			t.Errorf("pack %s: size %d, computed from the header %d", id.Str(), fi.Size, PackSize(hdr))
		}
		for _, b := range blobs {
			buf, err := r.LoadBlob(ctx, b.BlobHandle)
			if err != nil {
				t.Errorf("pack %s: %s: %v", id.Str(), b.BlobHandle, err)
				continue
			}
			if Hash(buf) != b.ID {
				t.Errorf("pack %s: %s: content hashes to %s", id.Str(), b.BlobHandle, Hash(buf).Str())
			}
		}
	}
}
