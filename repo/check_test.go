package repo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// chkFixture is a repository with stream backups, and where its packs are.
type chkFixture struct {
	r          *Repository
	be         *mem.Backend
	snaps      []*Snapshot
	data       [][]byte
	dataPacks  []ID
	treePacks  []ID
	indexFiles []ID
}

// chkSetup writes one stream backup per seed (about 10 MiB of mixed data
// each, several data packs) into a fresh repository.
func chkSetup(t *testing.T, version uint, seeds ...int64) *chkFixture {
	t.Helper()
	ctx := context.Background()
	r, be := newTestRepo(t, version, Options{PackSize: MinPackSize})
	f := &chkFixture{r: r, be: be}
	for _, seed := range seeds {
		data := mixedData(seed, 10<<20)
		res, err := r.BackupStream(ctx, Stream{Name: "db.dump", Reader: bytes.NewReader(data)}, BackupOptions{Hostname: "h"})
		if err != nil {
			t.Fatal(err)
		}
		f.snaps = append(f.snaps, res.Snapshot)
		f.data = append(f.data, data)
	}
	f.refresh(t)
	return f
}

// refresh finds the packs and index files as stored now.
func (f *chkFixture) refresh(t *testing.T) {
	t.Helper()
	f.dataPacks, f.treePacks, f.indexFiles = nil, nil, nil
	for _, h := range f.be.Handles() {
		id, err := ParseID(h.Name)
		if err != nil {
			continue
		}
		switch h.Type {
		case backend.IndexFile:
			f.indexFiles = append(f.indexFiles, id)
		case backend.PackFile:
			buf, _ := f.be.Get(h)
			blobs, err := decodePackTail(f.r.key, buf)
			if err != nil {
				t.Fatalf("pack %s: %v", id.Str(), err)
			}
			if blobs[0].Type == DataBlob {
				f.dataPacks = append(f.dataPacks, id)
			} else {
				f.treePacks = append(f.treePacks, id)
			}
		}
	}
	if len(f.dataPacks) == 0 || len(f.treePacks) == 0 || len(f.indexFiles) == 0 {
		t.Fatalf("fixture has %d data packs, %d tree packs, %d index files", len(f.dataPacks), len(f.treePacks), len(f.indexFiles))
	}
}

func chkPackHandle(id ID) backend.Handle {
	return backend.Handle{Type: backend.PackFile, Name: id.String()}
}

// check runs Check and fails the test on an error of the check itself.
func (f *chkFixture) check(t *testing.T, opts CheckOptions) *CheckReport {
	t.Helper()
	rep, err := f.r.Check(context.Background(), opts)
	if err != nil {
		t.Fatalf("Check(%+v): %v", opts, err)
	}
	if n := countType(f.be.Handles(), backend.LockFile); n != 0 {
		t.Fatalf("Check left %d lock files", n)
	}
	return rep
}

// headerBlobs decodes a stored pack's header.
func (f *chkFixture) headerBlobs(t *testing.T, id ID) []Blob {
	t.Helper()
	buf, ok := f.be.Get(chkPackHandle(id))
	if !ok {
		t.Fatalf("pack %s not stored", id.Str())
	}
	blobs, err := decodePackTail(f.r.key, buf)
	if err != nil {
		t.Fatal(err)
	}
	return blobs
}

// readFile restores a file and returns its bytes or the error.
func chkReadFile(r *Repository, sn *Snapshot, p string) ([]byte, error) {
	ctx := context.Background()
	n, err := r.FindNode(ctx, sn, p)
	if err != nil {
		return nil, err
	}
	fr, err := r.OpenFile(ctx, n)
	if err != nil {
		return nil, err
	}
	defer fr.Close()
	return io.ReadAll(fr)
}

// reopen opens the repository again from storage alone, with no cached index.
func (f *chkFixture) reopen(t *testing.T) *Repository {
	t.Helper()
	r, err := Open(context.Background(), f.be, "secret", Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func chkDump(t *testing.T, rep *CheckReport) string {
	var b strings.Builder
	for _, e := range rep.Errors {
		b.WriteString("  error: " + e.String() + "\n")
	}
	for _, h := range rep.Hints {
		b.WriteString("  hint: " + h.String() + "\n")
	}
	return b.String()
}

// chkWant fails unless rep has an error (or hint) of kind whose text
// contains every one of parts.
func chkWant(t *testing.T, rep *CheckReport, hint bool, kind ProblemKind, parts ...string) CheckProblem {
	t.Helper()
	if testing.Verbose() {
		t.Logf("report:\n%s", chkDump(t, rep))
	}
	list := rep.Errors
	if hint {
		list = rep.Hints
	}
next:
	for _, p := range list {
		if p.Kind != kind {
			continue
		}
		s := p.String()
		for _, part := range parts {
			if !strings.Contains(s, part) {
				continue next
			}
		}
		return p
	}
	t.Fatalf("no %s (hint %v) mentioning %q in:\n%s", kind, hint, parts, chkDump(t, rep))
	return CheckProblem{}
}

func chkClean(t *testing.T, rep *CheckReport) {
	t.Helper()
	if !rep.Ok() || len(rep.Hints) > 0 || len(rep.BrokenPacks) > 0 {
		t.Fatalf("want a clean report, got:\n%s", chkDump(t, rep))
	}
}

func TestCheckClean(t *testing.T) {
	for _, v := range []uint{1, 2} {
		f := chkSetup(t, v, 1, 2)
		var stages []CheckStage
		progress := func(p CheckProgress) {
			if len(stages) == 0 || stages[len(stages)-1] != p.Stage {
				stages = append(stages, p.Stage)
			}
		}
		rep := f.check(t, CheckOptions{Progress: progress})
		chkClean(t, rep)
		packs := len(f.dataPacks) + len(f.treePacks)
		if rep.Packs != packs || rep.StoredPacks != packs || rep.Snapshots != 2 || rep.Trees != 2 || rep.PacksRead != 0 {
			t.Fatalf("v%d: report %+v, want %d packs, 2 snapshots, 2 trees", v, rep, packs)
		}
		if rep.IndexFiles != len(f.indexFiles) {
			t.Fatalf("index files %d, want %d", rep.IndexFiles, len(f.indexFiles))
		}
		want := []CheckStage{StageLoadIndex, StagePacks, StageStructure}
		if strings.Join(chkStrings(stages), ",") != strings.Join(chkStrings(want), ",") {
			t.Fatalf("stages %v, want %v", stages, want)
		}

		stages = nil
		rep = f.check(t, CheckOptions{ReadData: true, Progress: progress, Workers: 2})
		chkClean(t, rep)
		if rep.PacksRead != packs {
			t.Fatalf("read %d packs, want %d", rep.PacksRead, packs)
		}
		var total int64
		for _, h := range f.be.Handles() {
			if h.Type == backend.PackFile {
				b, _ := f.be.Get(h)
				total += int64(len(b))
			}
		}
		if rep.BytesRead != total {
			t.Fatalf("read %d bytes, want %d", rep.BytesRead, total)
		}
		if stages[len(stages)-1] != StageReadData {
			t.Fatalf("stages %v", stages)
		}
	}
}

func chkStrings(s []CheckStage) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = string(x)
	}
	return out
}

func TestCheckFlippedByteInPack(t *testing.T) {
	f := chkSetup(t, 2, 1)
	pack := f.dataPacks[0]
	hdr := f.headerBlobs(t, pack)
	victim := hdr[len(hdr)/2]
	h := chkPackHandle(pack)
	buf, _ := f.be.Get(h)
	buf[victim.Offset+victim.Length/2] ^= 0x01
	f.be.Put(h, buf)

	// Sizes still match and the trees are intact: only reading finds it.
	chkClean(t, f.check(t, CheckOptions{}))

	rep := f.check(t, CheckOptions{ReadData: true})
	if rep.Ok() {
		t.Fatal("flipped byte not found by read-data")
	}
	chkWant(t, rep, false, ProblemPackData, pack.String(), "unexpected pack id")
	chkWant(t, rep, false, ProblemPackData, pack.String(), victim.ID.String(), "decrypt")
	for _, e := range rep.Errors {
		if e.Kind != ProblemPackData || !strings.Contains(e.Object, pack.String()) {
			t.Errorf("unexpected error %s", e)
		}
	}
	if len(rep.BrokenPacks) != 1 || rep.BrokenPacks[0] != pack {
		t.Fatalf("broken packs %v", rep.BrokenPacks)
	}

	// A restore of the file fails rather than returning wrong bytes.
	got, err := chkReadFile(f.reopen(t), f.snaps[0], "/db.dump")
	if err == nil || !strings.Contains(err.Error(), pack.String()) {
		t.Fatalf("restore of damaged file: %d bytes, err %v", len(got), err)
	}
}

func TestCheckFlippedByteInHeader(t *testing.T) {
	f := chkSetup(t, 2, 1)
	pack := f.dataPacks[0]
	h := chkPackHandle(pack)
	buf, _ := f.be.Get(h)
	buf[len(buf)-10] ^= 0x80 // inside the sealed header's MAC
	f.be.Put(h, buf)
	chkClean(t, f.check(t, CheckOptions{}))
	rep := f.check(t, CheckOptions{ReadData: true})
	chkWant(t, rep, false, ProblemPackData, pack.String(), "decrypt header")
	chkWant(t, rep, false, ProblemPackData, pack.String(), "unexpected pack id")
}

func TestCheckTruncatedPack(t *testing.T) {
	f := chkSetup(t, 2, 1)
	pack := f.dataPacks[0]
	h := chkPackHandle(pack)
	buf, _ := f.be.Get(h)
	f.be.Put(h, buf[:len(buf)/2])

	rep := f.check(t, CheckOptions{})
	p := chkWant(t, rep, false, ProblemPackSize, pack.String(), "unexpected file size")
	if p.Object != "data/"+pack.String()[:2]+"/"+pack.String() {
		t.Fatalf("object %q", p.Object)
	}
	if len(rep.Errors) != 1 || len(rep.BrokenPacks) != 1 {
		t.Fatalf("want exactly one error:\n%s", chkDump(t, rep))
	}

	rep = f.check(t, CheckOptions{ReadData: true})
	chkWant(t, rep, false, ProblemPackSize, pack.String())
	chkWant(t, rep, false, ProblemPackData, pack.String(), "extends past the end")
	chkWant(t, rep, false, ProblemPackData, pack.String(), "unexpected pack id")

	got, err := chkReadFile(f.reopen(t), f.snaps[0], "/db.dump")
	if err == nil {
		t.Fatalf("restore from a truncated pack returned %d bytes and no error", len(got))
	}
}

func TestCheckDeletedPack(t *testing.T) {
	f := chkSetup(t, 2, 1)
	pack := f.dataPacks[len(f.dataPacks)-1]
	f.be.Delete(chkPackHandle(pack))
	for _, rd := range []bool{false, true} {
		rep := f.check(t, CheckOptions{ReadData: rd})
		chkWant(t, rep, false, ProblemPackMissing, pack.String(), "does not exist")
		if len(rep.Errors) != 1 {
			t.Fatalf("read-data %v: want one error:\n%s", rd, chkDump(t, rep))
		}
		if rd && rep.PacksRead != len(f.dataPacks)+len(f.treePacks)-1 {
			t.Fatalf("read %d packs", rep.PacksRead)
		}
	}
	if _, err := chkReadFile(f.reopen(t), f.snaps[0], "/db.dump"); err == nil {
		t.Fatal("restore with a pack missing succeeded")
	}
}

func TestCheckDeletedTreePack(t *testing.T) {
	f := chkSetup(t, 2, 1)
	pack := f.treePacks[0]
	f.be.Delete(chkPackHandle(pack))
	rep := f.check(t, CheckOptions{})
	chkWant(t, rep, false, ProblemPackMissing, pack.String())
	chkWant(t, rep, false, ProblemTree, f.snaps[0].Tree.String(), f.snaps[0].ID.Str())
}

func TestCheckDeletedIndex(t *testing.T) {
	f := chkSetup(t, 2, 1, 2)
	// Delete the index file that lists the second backup's packs.
	r1 := f.reopen(t)
	idx, err := r1.Index(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pb, ok := idx.Lookup(BlobHandle{ID: *f.snaps[1].Tree, Type: TreeBlob})
	if !ok {
		t.Fatal("second tree not indexed")
	}
	var victim ID
	var gone []ID
	for _, id := range f.indexFiles {
		plain, err := f.r.loadUnpacked(context.Background(), backend.IndexFile, id)
		if err != nil {
			t.Fatal(err)
		}
		ij, _ := DecodeIndex(plain)
		for _, p := range ij.Packs {
			if p.ID == pb.PackID {
				victim = id
				for _, p := range ij.Packs {
					gone = append(gone, p.ID)
				}
			}
		}
	}
	f.be.Delete(backend.Handle{Type: backend.IndexFile, Name: victim.String()})

	for _, rd := range []bool{false, true} {
		rep := f.check(t, CheckOptions{ReadData: rd})
		for _, p := range gone {
			chkWant(t, rep, true, ProblemPackUnreferenced, p.String(), "not referenced in any index")
		}
		if len(rep.Hints) != len(gone) {
			t.Fatalf("want %d hints:\n%s", len(gone), chkDump(t, rep))
		}
		e := chkWant(t, rep, false, ProblemTree, f.snaps[1].Tree.String(), "not found in index")
		if e.Snapshot != f.snaps[1].ID.String() || e.Path != "/" {
			t.Fatalf("error %+v does not name the snapshot and path", e)
		}
		if rd && rep.PacksRead != rep.Packs {
			t.Fatalf("read %d of %d packs", rep.PacksRead, rep.Packs)
		}
	}
	if _, err := chkReadFile(f.reopen(t), f.snaps[1], "/db.dump"); err == nil {
		t.Fatal("restore of a snapshot whose index is gone succeeded")
	}
}

func TestCheckCorruptIndexFile(t *testing.T) {
	f := chkSetup(t, 2, 1, 2)
	if len(f.indexFiles) < 2 {
		t.Fatalf("%d index files", len(f.indexFiles))
	}
	victim := f.indexFiles[0]
	h := backend.Handle{Type: backend.IndexFile, Name: victim.String()}
	buf, _ := f.be.Get(h)
	buf[len(buf)/2] ^= 0x04
	f.be.Put(h, buf)
	rep := f.check(t, CheckOptions{ReadData: true})
	e := chkWant(t, rep, false, ProblemIndex, "index/"+victim.String())
	if strings.Count(e.String(), victim.String()) != 1 {
		t.Errorf("object named more than once: %s", e)
	}
	if len(rep.Errors) != 1 || !rep.IndexDamaged || !rep.SuggestRepairIndex() {
		t.Fatalf("report %+v:\n%s", rep, chkDump(t, rep))
	}
	if rep.IndexFiles != len(f.indexFiles) || rep.Snapshots != 0 || rep.PacksRead != 0 {
		t.Fatalf("later stages ran after a damaged index: %+v", rep)
	}
}

func TestCheckCorruptSnapshot(t *testing.T) {
	f := chkSetup(t, 2, 1, 2)
	victim := f.snaps[0].ID
	h := backend.Handle{Type: backend.SnapshotFile, Name: victim.String()}
	buf, _ := f.be.Get(h)
	buf[len(buf)/2] ^= 0x10
	f.be.Put(h, buf)
	rep := f.check(t, CheckOptions{})
	chkWant(t, rep, false, ProblemSnapshot, "snapshots/"+victim.String())
	if len(rep.Errors) != 1 || rep.Snapshots != 2 || rep.Trees != 1 {
		t.Fatalf("report %+v:\n%s", rep, chkDump(t, rep))
	}

	// A snapshot file that is not JSON at all, correctly sealed.
	f2 := chkSetup(t, 1, 3)
	id, err := f2.r.saveJSON(context.Background(), backend.SnapshotFile, []int{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	rep = f2.check(t, CheckOptions{})
	chkWant(t, rep, false, ProblemSnapshot, "snapshots/"+id.String(), "decode JSON")
}

func TestCheckMissingTreesAndBlobs(t *testing.T) {
	f := chkSetup(t, 2, 1)
	ctx := context.Background()
	w, err := f.r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have, _, err := w.SaveBlob(ctx, DataBlob, []byte("present"))
	if err != nil {
		t.Fatal(err)
	}
	missingTree, missingBlob, missingRoot := Hash([]byte("no such tree")), Hash([]byte("no such blob")), Hash([]byte("no such root"))
	now := time.Unix(1700000000, 0)
	sub := &Tree{Nodes: []*Node{
		{Name: "gone", Type: NodeDir, Mode: fs.ModeDir | 0o755, ModTime: now, Subtree: &missingTree},
	}}
	subBuf, err := EncodeTree(sub)
	if err != nil {
		t.Fatal(err)
	}
	subID, _, err := w.SaveBlob(ctx, TreeBlob, subBuf)
	if err != nil {
		t.Fatal(err)
	}
	root := &Tree{Nodes: []*Node{
		{Name: "dir", Type: NodeDir, Mode: fs.ModeDir | 0o755, ModTime: now, Subtree: &subID},
		{Name: "f", Type: NodeFile, Mode: 0o644, ModTime: now, Size: 17, Content: []ID{have, missingBlob}},
		{Name: "weird", Type: "bogus", ModTime: now},
	}}
	rootBuf, err := EncodeTree(root)
	if err != nil {
		t.Fatal(err)
	}
	rootID, _, err := w.SaveBlob(ctx, TreeBlob, rootBuf)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	bad, err := f.r.SaveSnapshot(ctx, &Snapshot{Time: now, Tree: &rootID, Paths: []string{"/x"}})
	if err != nil {
		t.Fatal(err)
	}
	noRoot, err := f.r.SaveSnapshot(ctx, &Snapshot{Time: now, Tree: &missingRoot, Paths: []string{"/y"}})
	if err != nil {
		t.Fatal(err)
	}

	rep := f.check(t, CheckOptions{ReadData: true})
	e := chkWant(t, rep, false, ProblemTree, "tree "+missingTree.String(), "not found in index")
	if e.Snapshot != bad.String() || e.Path != "/dir/gone" {
		t.Fatalf("missing subtree reported as %+v", e)
	}
	e = chkWant(t, rep, false, ProblemTree, "tree "+rootID.String(), `file "f"`, "data blob "+missingBlob.String(), "part 1")
	if e.Snapshot != bad.String() || e.Path != "/" {
		t.Fatalf("missing blob reported as %+v", e)
	}
	chkWant(t, rep, false, ProblemTree, "tree "+rootID.String(), `"weird"`, "invalid type")
	chkWant(t, rep, false, ProblemTree, "tree "+missingRoot.String(), noRoot.Str(), "not found in index")
	if len(rep.Errors) != 4 {
		t.Fatalf("want 4 errors:\n%s", chkDump(t, rep))
	}
}

func TestCheckCorruptTreeBlob(t *testing.T) {
	f := chkSetup(t, 2, 1)
	pack := f.treePacks[0]
	h := chkPackHandle(pack)
	buf, _ := f.be.Get(h)
	buf[20] ^= 0x01 // inside the first (and only) tree blob
	f.be.Put(h, buf)
	rep := f.check(t, CheckOptions{})
	e := chkWant(t, rep, false, ProblemTree, "tree "+f.snaps[0].Tree.String(), pack.String())
	if e.Snapshot != f.snaps[0].ID.String() {
		t.Fatalf("%+v", e)
	}
}

// chkRewriteIndex replaces the index file listing pack with one where edit
// has changed that pack's entries.
func chkRewriteIndex(t *testing.T, f *chkFixture, pack ID, edit func(blobs []IndexBlobJSON)) {
	t.Helper()
	ctx := context.Background()
	for _, id := range f.indexFiles {
		plain, err := f.r.loadUnpacked(ctx, backend.IndexFile, id)
		if err != nil {
			t.Fatal(err)
		}
		ij, err := DecodeIndex(plain)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ij.Packs {
			if ij.Packs[i].ID != pack {
				continue
			}
			edit(ij.Packs[i].Blobs)
			if _, err := f.r.saveJSON(ctx, backend.IndexFile, ij); err != nil {
				t.Fatal(err)
			}
			f.be.Delete(backend.Handle{Type: backend.IndexFile, Name: id.String()})
			return
		}
	}
	t.Fatalf("pack %s in no index file", pack.Str())
}

// chkPackWithBlobs returns a data pack holding at least n blobs: how many a
// pack gets depends on the chunk sizes, and so on the random polynomial.
func chkPackWithBlobs(t *testing.T, f *chkFixture, n int) ID {
	t.Helper()
	idx, err := f.r.Index(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byPack := idx.PackBlobs()
	for _, p := range f.dataPacks {
		if len(byPack[p]) >= n {
			return p
		}
	}
	t.Fatalf("no data pack with %d blobs", n)
	return ID{}
}

func TestCheckIndexDisagreesWithHeader(t *testing.T) {
	t.Run("uncompressed length", func(t *testing.T) {
		f := chkSetup(t, 2, 1)
		pack := f.dataPacks[0]
		var blob ID
		chkRewriteIndex(t, f, pack, func(bs []IndexBlobJSON) {
			for i := range bs {
				if bs[i].UncompressedLength != 0 {
					bs[i].UncompressedLength++
					blob = bs[i].ID
					return
				}
			}
			t.Fatal("no compressed blob")
		})
		chkClean(t, f.check(t, CheckOptions{}))
		rep := f.check(t, CheckOptions{ReadData: true})
		chkWant(t, rep, false, ProblemPackData, pack.String(), blob.String(), "pack header says", "index says")
		chkWant(t, rep, false, ProblemPackData, pack.String(), blob.String(), "decompressed to")
	})
	t.Run("offset", func(t *testing.T) {
		f := chkSetup(t, 2, 1)
		pack := chkPackWithBlobs(t, f, 2)
		var blob ID
		chkRewriteIndex(t, f, pack, func(bs []IndexBlobJSON) {
			bs[1].Offset += 3
			blob = bs[1].ID
		})
		chkClean(t, f.check(t, CheckOptions{}))
		rep := f.check(t, CheckOptions{ReadData: true})
		chkWant(t, rep, false, ProblemPackData, pack.String(), "gaps / overlapping")
		chkWant(t, rep, false, ProblemPackData, pack.String(), blob.String(), "pack header says")
		chkWant(t, rep, false, ProblemPackData, pack.String(), blob.String(), "decrypt")
	})
	t.Run("entry renamed", func(t *testing.T) {
		f := chkSetup(t, 2, 1)
		pack := f.dataPacks[0]
		var blob ID
		chkRewriteIndex(t, f, pack, func(bs []IndexBlobJSON) {
			blob = bs[len(bs)-1].ID
			bs[len(bs)-1].ID = Hash([]byte("another blob"))
		})
		rep := f.check(t, CheckOptions{})
		chkWant(t, rep, false, ProblemTree, `file "db.dump"`, "data blob "+blob.String(), "not found in index")
		rep = f.check(t, CheckOptions{ReadData: true})
		chkWant(t, rep, false, ProblemPackData, pack.String(), blob.String(), "not contained in the index for this pack")
		chkWant(t, rep, false, ProblemPackData, pack.String(), Hash([]byte("another blob")).String(), "content hash")
		chkWant(t, rep, false, ProblemPackData, pack.String(), Hash([]byte("another blob")).String(), "not in its header")
	})
}

func TestCheckHints(t *testing.T) {
	f := chkSetup(t, 2, 1)
	ctx := context.Background()
	// A pack with a copy of a blob the repository has, and a tree blob:
	// stored but not indexed, then indexed twice.
	dup := f.data[0][:1000]
	w, err := f.r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dupID, _, err := w.SaveBlob(ctx, DataBlob, dup)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p := newPackBuilder(0)
	for _, b := range []struct {
		t    BlobType
		data []byte
	}{{DataBlob, dup}, {TreeBlob, []byte("{\"nodes\":[]}\n")}} {
		h := BlobHandle{ID: Hash(b.data), Type: b.t}
		sealed, ulen, err := f.r.sealBlob(h, b.data)
		if err != nil {
			t.Fatal(err)
		}
		p.add(h, sealed, ulen)
	}
	fp, err := p.finish(f.r.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.be.Save(ctx, chkPackHandle(fp.id), fp.source()); err != nil {
		t.Fatal(err)
	}

	rep := f.check(t, CheckOptions{ReadData: true})
	chkWant(t, rep, true, ProblemPackUnreferenced, fp.id.String())
	if !rep.Ok() || len(rep.Hints) != 1 || !rep.SuggestPrune() || rep.SuggestRepairIndex() {
		t.Fatalf("orphan pack:\n%s", chkDump(t, rep))
	}

	ij := &IndexJSON{Packs: []IndexPackJSON{{ID: fp.id}}}
	for _, b := range fp.blobs {
		ij.Packs[0].Blobs = append(ij.Packs[0].Blobs, IndexBlobJSON{ID: b.ID, Type: b.Type, Offset: uint(b.Offset), Length: uint(b.Length), UncompressedLength: uint(b.UncompressedLength)})
	}
	for i := 0; i < 2; i++ {
		if _, err := f.r.saveJSON(ctx, backend.IndexFile, ij); err != nil {
			t.Fatal(err)
		}
	}
	rep = f.check(t, CheckOptions{ReadData: true})
	chkWant(t, rep, true, ProblemBlobDuplicate, "data blob "+dupID.String(), fp.id.Str())
	chkWant(t, rep, true, ProblemPackMixed, fp.id.String())
	chkWant(t, rep, true, ProblemPackMultiIndex, fp.id.String())
	if !rep.Ok() || len(rep.Hints) != 3 || !rep.SuggestRepairIndex() {
		t.Fatalf("duplicates:\n%s", chkDump(t, rep))
	}
}

func TestParseDataSubset(t *testing.T) {
	good := map[string]DataSubset{
		"1/1":     {Group: 1, Groups: 1},
		"3/5":     {Group: 3, Groups: 5},
		"256/256": {Group: 256, Groups: 256},
		"10%":     {Percent: 10},
		"0.5%":    {Percent: 0.5},
		"100%":    {Percent: 100},
		"500":     {Bytes: 500},
		"2k":      {Bytes: 2048},
		"3M":      {Bytes: 3 << 20},
		"1G":      {Bytes: 1 << 30},
		"7b":      {Bytes: 7},
	}
	for s, want := range good {
		got, err := ParseDataSubset(s)
		if err != nil || got != want {
			t.Errorf("ParseDataSubset(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0/3", "4/3", "1/0", "1/257", "a/b", "1/2/3", "0%", "101%", "x%", "-5%", "0", "-1", "12q", "M"} {
		if _, err := ParseDataSubset(s); err == nil {
			t.Errorf("ParseDataSubset(%q) accepted", s)
		}
	}
}

func TestDataSubsetSelect(t *testing.T) {
	packs := map[ID]int64{}
	for i := 0; i < 300; i++ {
		packs[Hash([]byte{byte(i), byte(i >> 8)})] = 100
	}
	seen := map[ID]int{}
	for n := uint(1); n <= 7; n++ {
		for _, id := range (DataSubset{Group: n, Groups: 7}).Select(packs) {
			if uint(id[0])%7 != n-1 {
				t.Fatalf("pack %s in group %d", id.Str(), n)
			}
			seen[id]++
		}
	}
	if len(seen) != len(packs) {
		t.Fatalf("groups cover %d of %d packs", len(seen), len(packs))
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("pack %s in %d groups", id.Str(), c)
		}
	}
	if n := len((DataSubset{Percent: 10}).Select(packs)); n != 30 {
		t.Fatalf("10%% selected %d", n)
	}
	if n := len((DataSubset{Percent: 0.01}).Select(packs)); n != 1 {
		t.Fatalf("0.01%% selected %d, want at least one", n)
	}
	if n := len((DataSubset{Bytes: 3000}).Select(packs)); n != 30 {
		t.Fatalf("3000 bytes selected %d", n)
	}
	if n := len((DataSubset{Bytes: 1 << 40}).Select(packs)); n != 300 {
		t.Fatalf("more than everything selected %d", n)
	}
}

func TestCheckReadDataSubset(t *testing.T) {
	f := chkSetup(t, 2, 1)
	all := len(f.dataPacks) + len(f.treePacks)
	// Damage a data pack: reading every group finds it exactly once.
	pack := f.dataPacks[0]
	h := chkPackHandle(pack)
	buf, _ := f.be.Get(h)
	buf[100] ^= 0x01
	f.be.Put(h, buf)
	read, found := 0, 0
	for n := 1; n <= 3; n++ {
		rep := f.check(t, CheckOptions{ReadDataSubset: string(rune('0'+n)) + "/3"})
		read += rep.PacksRead
		if !rep.Ok() {
			found++
			chkWant(t, rep, false, ProblemPackData, pack.String())
			if uint(pack[0])%3 != uint(n-1) {
				t.Fatalf("pack %s found in group %d", pack.Str(), n)
			}
		}
	}
	if read != all || found != 1 {
		t.Fatalf("groups read %d of %d packs, found the damage %d times", read, all, found)
	}
	if rep := f.check(t, CheckOptions{ReadDataSubset: "100%"}); rep.PacksRead != all || rep.Ok() {
		t.Fatalf("100%%: read %d, ok %v", rep.PacksRead, rep.Ok())
	}
	if rep := f.check(t, CheckOptions{ReadDataSubset: "1b"}); rep.PacksRead != 1 {
		t.Fatalf("1b: read %d", rep.PacksRead)
	}
	ctx := context.Background()
	if _, err := f.r.Check(ctx, CheckOptions{ReadDataSubset: "0/3"}); err == nil {
		t.Fatal("invalid subset accepted")
	}
	if _, err := f.r.Check(ctx, CheckOptions{ReadData: true, ReadDataSubset: "1/3"}); err == nil {
		t.Fatal("read-data with a subset accepted")
	}
}

func TestCheckLocking(t *testing.T) {
	f := chkSetup(t, 2, 1)
	ctx := context.Background()
	other := f.reopen(t)
	for _, exclusive := range []bool{false, true} {
		l, err := other.Lock(ctx, exclusive)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.r.Check(ctx, CheckOptions{})
		var le *LockedError
		if !errors.As(err, &le) {
			t.Fatalf("check while another process holds a lock (exclusive %v): %v", exclusive, err)
		}
		rep, err := f.r.Check(ctx, CheckOptions{NoLock: true})
		if err != nil || !rep.Ok() {
			t.Fatalf("check --no-lock: %v", err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Check holds an exclusive lock: a backup cannot start meanwhile.
	var sawLock bool
	f.be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpLoad && h.Type == backend.SnapshotFile && !sawLock {
			locks, err := other.ListLocks(ctx)
			if err != nil {
				return err
			}
			sawLock = len(locks) == 1 && locks[0].Exclusive
		}
		return nil
	})
	chkClean(t, f.check(t, CheckOptions{}))
	f.be.SetHook(nil)
	if !sawLock {
		t.Fatal("no exclusive lock held during check")
	}
}

func TestCheckProblemCallback(t *testing.T) {
	f := chkSetup(t, 2, 1)
	f.be.Delete(chkPackHandle(f.dataPacks[0]))
	var got []CheckProblem
	rep := f.check(t, CheckOptions{Problem: func(p CheckProblem) { got = append(got, p) }})
	if len(got) != len(rep.Errors)+len(rep.Hints) || len(got) == 0 {
		t.Fatalf("callback saw %d problems, report has %d", len(got), len(rep.Errors)+len(rep.Hints))
	}
}

func TestCheckCancelled(t *testing.T) {
	f := chkSetup(t, 2, 1)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := f.r.Check(ctx, CheckOptions{ReadData: true, NoLock: true, Progress: func(p CheckProgress) {
		if p.Stage == StageReadData {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}
