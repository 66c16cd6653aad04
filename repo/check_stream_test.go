package repo

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// packLoads counts full-pack loads per pack while installed.
func packLoads(be *mem.Backend) (func() map[string]int, func()) {
	var mu sync.Mutex
	n := map[string]int{}
	be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpLoad && h.Type == backend.PackFile {
			mu.Lock()
			n[h.Name]++
			mu.Unlock()
		}
		return nil
	})
	get := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range n {
			out[k] = v
		}
		return out
	}
	return get, func() { be.SetHook(nil) }
}

// A healthy pack is verified in one streamed download; a damaged one is
// downloaded a second time, whole, and its problem reported as before.
func TestCheckReadDataStreamsHealthyPacks(t *testing.T) {
	f := chkSetup(t, 2, 1)
	loads, done := packLoads(f.be)
	defer done()
	rep := f.check(t, CheckOptions{ReadData: true, Workers: 2})
	chkClean(t, rep)
	// Tree packs are also read by the structure check; data packs only here.
	for _, id := range f.dataPacks {
		if got := loads()[id.String()]; got != 1 {
			t.Fatalf("pack %s loaded %d times, want 1", id.Str(), got)
		}
	}

	pack := f.dataPacks[0]
	hdr := f.headerBlobs(t, pack)
	victim := hdr[len(hdr)-1]
	h := chkPackHandle(pack)
	buf, _ := f.be.Get(h)
	buf[victim.Offset+victim.Length/2] ^= 0x01
	f.be.Put(h, buf)
	before := loads()[pack.String()]
	rep = f.check(t, CheckOptions{ReadData: true, Workers: 2})
	if rep.Ok() {
		t.Fatal("flipped byte not found")
	}
	if got := loads()[pack.String()] - before; got != 2 {
		t.Fatalf("damaged pack loaded %d times, want 2 (stream, then whole)", got)
	}
	if !strings.Contains(chkDump(t, rep), victim.ID.String()) {
		t.Fatalf("report does not name the damaged blob:\n%s", chkDump(t, rep))
	}
	if len(rep.BrokenPacks) != 1 || rep.BrokenPacks[0] != pack {
		t.Fatalf("broken packs %v, want [%s]", rep.BrokenPacks, pack.Str())
	}
}

// A pack whose header lists a blob the index lacks passes every streamed
// blob, yet must not pass: the header comparison sends it to the whole read.
func TestCheckReadDataStreamHeaderMismatch(t *testing.T) {
	f := chkSetup(t, 2, 1)
	pack := f.dataPacks[0]
	// The index side lacks the pack's last blob.
	hdr := f.headerBlobs(t, pack)
	if len(hdr) < 2 {
		t.Skip("need a pack with two blobs")
	}
	c := &checkRun{r: f.r, packs: map[ID][]Blob{pack: hdr[:len(hdr)-1]}}
	if _, ok := c.streamPack(t.Context(), pack, hdr[:len(hdr)-1], &packReadBuf{}); ok {
		t.Fatal("a pack with a blob the index lacks passed the streamed check")
	}
	if _, ok := c.streamPack(t.Context(), pack, hdr, &packReadBuf{}); !ok {
		t.Fatal("the pack failed the streamed check against its own header")
	}
}

// streamBlob is the only check of a streamed blob's content: the pack's
// hash covers the bytes, not that they open to the blob the index names.
// Each kind of damage must fail it, whatever the pack's name says.
func TestCheckStreamBlobVerifies(t *testing.T) {
	f := chkSetup(t, 2, 1)
	pack := f.dataPacks[0]
	hdr := f.headerBlobs(t, pack)
	buf, _ := f.be.Get(chkPackHandle(pack))
	c := &checkRun{r: f.r}
	blob := func(b Blob) []byte { return bytes.Clone(buf[b.Offset : b.Offset+b.Length]) }
	var compressed *Blob
	for i := range hdr {
		b := hdr[i]
		if !c.streamBlob(bytes.NewReader(blob(b)), b) {
			t.Fatalf("healthy blob %s failed", b.ID.Str())
		}
		if b.IsCompressed() && compressed == nil {
			compressed = &hdr[i]
		}
	}
	b := hdr[0]
	flipped := blob(b)
	flipped[len(flipped)/2] ^= 1
	if c.streamBlob(bytes.NewReader(flipped), b) {
		t.Error("a flipped byte passed")
	}
	wrongID := b
	wrongID.ID[0] ^= 1
	if c.streamBlob(bytes.NewReader(blob(b)), wrongID) {
		t.Error("a blob that hashes to another ID passed")
	}
	if c.streamBlob(bytes.NewReader(blob(b)[:b.Length-1]), b) {
		t.Error("a blob cut short passed")
	}
	if compressed == nil {
		t.Fatal("the fixture has no compressed blob")
	}
	wrongLen := *compressed
	wrongLen.UncompressedLength++
	if c.streamBlob(bytes.NewReader(blob(*compressed)), wrongLen) {
		t.Error("a compressed blob of another length than the index says passed")
	}
}
