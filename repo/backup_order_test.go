package repo

import (
	"context"
	"io"
	"math/rand/v2"
	"testing"
)

// Workers seal chunks out of order and give each chunk buffer back as
// soon as it is sealed, but blobs still reach the packs in stream order:
// every pack holds one run of the file's consecutive chunks at rising
// offsets, so a restore reads each pack once, front to back.
func TestBackupPacksInStreamOrder(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t, 0, Options{Workers: 4, PackSize: MinPackSize})
	src := io.LimitReader(rand.NewChaCha8([32]byte{7}), 96<<20) // incompressible: many packs
	res, err := r.BackupStream(ctx, Stream{Name: "f", Reader: src}, BackupOptions{Hostname: "test"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := r.FindNode(ctx, res.Snapshot, "/f")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := r.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Content) < 20 {
		t.Fatalf("only %d chunks", len(node.Content))
	}
	seen := map[ID]bool{}
	var prev PackedBlob
	for i, id := range node.Content {
		pb, ok := idx.Lookup(BlobHandle{ID: id, Type: DataBlob})
		if !ok {
			t.Fatalf("chunk %d (%s) not in the index", i, id.Str())
		}
		if i > 0 && pb.PackID == prev.PackID {
			if pb.Offset != prev.Offset+prev.Length {
				t.Fatalf("chunk %d is at offset %d of pack %s, chunk %d ends at %d", i, pb.Offset, pb.PackID.Str(), i-1, prev.Offset+prev.Length)
			}
		} else {
			if seen[pb.PackID] {
				t.Fatalf("chunk %d goes back to pack %s after other packs", i, pb.PackID.Str())
			}
			if pb.Offset != 0 {
				t.Fatalf("chunk %d starts pack %s at offset %d, not 0", i, pb.PackID.Str(), pb.Offset)
			}
			seen[pb.PackID] = true
		}
		prev = pb
	}
	t.Logf("%d chunks in %d packs, each pack one run in stream order", len(node.Content), len(seen))
}
