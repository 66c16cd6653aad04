package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"reflect"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/internal/crypto"
)

// fuzzKey is fixed so that seeds stay meaningful across runs.
func fuzzKey() *crypto.Key {
	b := make([]byte, 64)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	k, err := crypto.KeyFromBytes(b)
	if err != nil {
		panic(err)
	}
	return k
}

// FuzzDecodeHeader: any input either fails or decodes to entries that
// encode back to exactly the same bytes, with cumulative offsets.
func FuzzDecodeHeader(f *testing.F) {
	seeds := [][]Blob{
		{{BlobHandle: BlobHandle{ID: seqID(1), Type: DataBlob}, Length: 40}},
		{{BlobHandle: BlobHandle{ID: seqID(2), Type: TreeBlob}, Length: 1000, UncompressedLength: 5000}},
		{
			{BlobHandle: BlobHandle{ID: seqID(1), Type: DataBlob}, Length: 32},
			{BlobHandle: BlobHandle{ID: seqID(2), Type: TreeBlob}, Length: 33},
			{BlobHandle: BlobHandle{ID: seqID(3), Type: DataBlob}, Length: 0xffffffff, UncompressedLength: 1},
			{BlobHandle: BlobHandle{ID: seqID(4), Type: TreeBlob}, Length: 50, UncompressedLength: 0xffffffff},
		},
	}
	for _, s := range seeds {
		hdr, err := EncodeHeader(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(hdr)
	}
	f.Add([]byte{})
	f.Add([]byte{4})
	f.Fuzz(func(t *testing.T, hdr []byte) {
		blobs, err := DecodeHeader(hdr)
		if err != nil {
			if blobs != nil {
				t.Fatal("blobs returned with an error")
			}
			return
		}
		again, err := EncodeHeader(blobs)
		if err != nil {
			t.Fatalf("decoded header does not encode: %v", err)
		}
		if !bytes.Equal(again, hdr) {
			t.Fatalf("re-encoded header differs:\n%x\n%x", hdr, again)
		}
		var off uint64
		for i, b := range blobs {
			if uint64(b.Offset) != off || b.Length < crypto.Overhead || (b.Type != DataBlob && b.Type != TreeBlob) {
				t.Fatalf("entry %d: %+v (offset want %d)", i, b, off)
			}
			off += uint64(b.Length)
		}
		if PackSize(blobs) != int64(off)+int64(len(hdr))+crypto.Overhead+4 {
			t.Fatal("PackSize disagrees with the header")
		}
	})
}

// FuzzReadPackHeader stores arbitrary bytes as a pack (and asks for an
// arbitrary size): errors, never panics; success only for a consistent pack.
func FuzzReadPackHeader(f *testing.F) {
	key := fuzzKey()
	for _, n := range []int{1, 3, 20} {
		p := newPackBuilder(0)
		for i := 0; i < n; i++ {
			plain := bytes.Repeat([]byte{byte(i)}, i)
			sealed, err := key.Seal(nil, plain)
			if err != nil {
				f.Fatal(err)
			}
			p.add(BlobHandle{ID: Hash(plain), Type: DataBlob}, sealed, uint32(i%2*(i+1)))
		}
		fp, err := p.finish(key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fp.data, int64(0))
		f.Add(fp.data, int64(1))
		f.Add(fp.data[:len(fp.data)-1], int64(0))
	}
	f.Add([]byte{}, int64(0))
	f.Add(binary.LittleEndian.AppendUint32(make([]byte, 100), 96), int64(0))
	f.Fuzz(func(t *testing.T, data []byte, sizeDelta int64) {
		be := mem.New()
		id := Hash(data)
		be.Put(packHandle(id), data)
		size := int64(len(data))
		if sizeDelta%7 == 1 { // sometimes ask for a wrong size
			size += sizeDelta
		}
		blobs, err := readPackHeader(context.Background(), be, key, id, size)
		if err != nil {
			var ce *CorruptError
			if size == int64(len(data)) && !errors.As(err, &ce) {
				t.Fatalf("damage in a pack of the right size is not a CorruptError: %v", err)
			}
			return
		}
		if PackSize(blobs) != int64(len(data)) || size != int64(len(data)) {
			t.Fatalf("accepted a pack of %d bytes (asked %d) whose header describes %d", len(data), size, PackSize(blobs))
		}
	})
}

// FuzzDecodeIndex: no panics; an accepted index re-encodes and decodes to
// the same value, and can be merged into an Index.
func FuzzDecodeIndex(f *testing.F) {
	buf, _ := json.Marshal(sampleIndex())
	f.Add(buf)
	packs, _ := json.Marshal(sampleIndex().Packs)
	f.Add(packs)
	f.Add([]byte(`{"supersedes":["` + seqID(3).String() + `"],"packs":[]}`))
	f.Add([]byte(`{"packs":[{"id":"` + seqID(1).String() + `","blobs":[{"id":"` + seqID(2).String() + `","type":"tree","offset":0,"length":40,"uncompressed_length":0}]}]}`))
	f.Add([]byte(` []`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, plain []byte) {
		ij, err := DecodeIndex(plain)
		if err != nil {
			return
		}
		enc, err := json.Marshal(ij)
		if err != nil {
			t.Fatalf("accepted index does not encode: %v", err)
		}
		back, err := DecodeIndex(enc)
		if err != nil {
			t.Fatalf("re-encoded index rejected: %v\n%s", err, enc)
		}
		if !reflect.DeepEqual(normIndex(back), normIndex(ij)) {
			t.Fatalf("round trip differs:\n%+v\n%+v", ij, back)
		}
		idx := NewIndex()
		idx.addFile(seqID(0), ij)
		for _, p := range ij.Packs {
			for _, b := range p.Blobs {
				pb, ok := idx.Lookup(BlobHandle{ID: b.ID, Type: b.Type})
				if !ok || pb.Length < crypto.Overhead {
					t.Fatalf("blob %s not found after addFile", b.ID.Str())
				}
			}
		}
		_ = idx.PackBlobs()
	})
}

// normIndex maps empty and nil lists to nil for comparison.
func normIndex(ij *IndexJSON) *IndexJSON {
	out := &IndexJSON{}
	if len(ij.Supersedes) > 0 {
		out.Supersedes = ij.Supersedes
	}
	for _, p := range ij.Packs {
		q := IndexPackJSON{ID: p.ID}
		if len(p.Blobs) > 0 {
			q.Blobs = p.Blobs
		}
		out.Packs = append(out.Packs, q)
	}
	return out
}

// FuzzDecodeTree: no panics; an accepted tree, sorted, encodes without
// panicking, and (names unique) its encoding is stable: decoding and
// encoding it again gives the same bytes and the same names.
func FuzzDecodeTree(f *testing.F) {
	mt := time.Date(2024, 1, 2, 3, 4, 5, 6, time.FixedZone("", -7200))
	sub := seqID(9)
	seedTrees := []*Tree{
		{},
		{Nodes: []*Node{
			{Name: "dir", Type: NodeDir, Mode: fs.ModeDir | 0o755, ModTime: mt, Subtree: &sub},
			{Name: "file", Type: NodeFile, Mode: 0o644, ModTime: mt, UID: 1, GID: 2, Size: 3, Content: []ID{seqID(1)}},
			{Name: "link", Type: NodeSymlink, LinkTarget: "a\xffb"},
			{Name: "new\nline\t\"q\"\\\xfe", Type: NodeFile, Content: []ID{}},
		}},
		{Nodes: []*Node{{Name: "x", Type: "dev", Device: 5, User: "u", Group: "g", Inode: 7, Links: 2, Error: "e",
			ExtendedAttributes: []ExtendedAttribute{{Name: "user.a", Value: []byte{0, 1}}},
			GenericAttributes:  map[string]json.RawMessage{"k": json.RawMessage(`{"a":[1,2]}`)}}}},
	}
	for _, tr := range seedTrees {
		tr.Sort()
		buf, err := EncodeTree(tr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf)
	}
	f.Add([]byte(`{"nodes":[{"name":"b"},{"name":"a"},{"name":"a"}]}`))
	f.Add([]byte(`{"nodes":[{"name":"\\x","type":"file"}]}`))
	f.Add([]byte(`{"nodes":[{"name":"t","mtime":"9999-12-31T23:59:59-23:59","atime":"0000-01-01T00:00:00+23:00"}]}`))
	f.Fuzz(func(t *testing.T, buf []byte) {
		tr, err := DecodeTree(buf)
		if err != nil {
			return
		}
		tr.Sort()
		enc, err := EncodeTree(tr)
		if err != nil {
			// Only duplicate names may stop a sorted tree.
			for i := 1; i < len(tr.Nodes); i++ {
				if tr.Nodes[i-1].Name == tr.Nodes[i].Name {
					return
				}
			}
			t.Fatalf("sorted tree with unique names does not encode: %v", err)
		}
		tr2, err := DecodeTree(enc)
		if err != nil {
			t.Fatalf("own encoding rejected: %v\n%s", err, enc)
		}
		if len(tr2.Nodes) != len(tr.Nodes) {
			t.Fatalf("%d nodes became %d", len(tr.Nodes), len(tr2.Nodes))
		}
		for i := range tr.Nodes {
			if tr.Nodes[i].Name != tr2.Nodes[i].Name || tr.Nodes[i].LinkTarget != tr2.Nodes[i].LinkTarget {
				t.Fatalf("node %d: name %q/%q link %q/%q", i, tr.Nodes[i].Name, tr2.Nodes[i].Name, tr.Nodes[i].LinkTarget, tr2.Nodes[i].LinkTarget)
			}
		}
		enc2, err := EncodeTree(tr2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n%s\n%s", enc, enc2)
		}
	})
}

// FuzzParseKeyFile: no panics; an accepted key file has usable parameters,
// re-encodes to an accepted key file and, for cheap parameters, can be
// tried with a password without panicking.
func FuzzParseKeyFile(f *testing.F) {
	r, err := Init(context.Background(), mem.New(), "pw", InitOptions{KDF: &KDFParams{N: 16, R: 1, P: 1}, Username: "u", Hostname: "h"}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	be := r.Backend().(*mem.Backend)
	for _, h := range be.Handles() {
		if h.Type == "keys" {
			buf, _ := be.Get(h)
			f.Add(buf, "pw")
			f.Add(buf, "wrong")
		}
	}
	r.Close()
	f.Add([]byte(`{"kdf":"scrypt","N":2,"r":1,"p":1,"salt":"AA==","data":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`), "")
	f.Add([]byte(`{"kdf":"scrypt","N":4611686018427387904,"r":8,"p":1,"salt":"AA==","data":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`), "")
	f.Fuzz(func(t *testing.T, buf []byte, password string) {
		kf, err := ParseKeyFile(buf)
		if err != nil {
			return
		}
		if kf.KDF != "scrypt" || len(kf.Salt) == 0 || len(kf.Data) < crypto.Overhead {
			t.Fatalf("accepted %+v", kf)
		}
		if err := kf.params().Validate(); err != nil {
			t.Fatalf("accepted invalid params: %v", err)
		}
		enc, err := json.Marshal(kf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseKeyFile(enc); err != nil {
			t.Fatalf("re-encoded key file rejected: %v", err)
		}
		// Only cheap parameters: a fuzzed key file may ask for gigabytes.
		if uint64(kf.N)*uint64(kf.R) <= 1<<12 && uint64(kf.R)*uint64(kf.P) <= 1<<6 {
			_, _ = kf.openMaster(password)
		}
	})
}

// FuzzOpenUnpacked: arbitrary plaintext of a snapshot, index or lock file
// (sealed with the right key, so the MAC passes) is either returned as JSON,
// decompressed, or rejected, never a panic.
func FuzzOpenUnpacked(f *testing.F) {
	r, err := Init(context.Background(), mem.New(), "pw", InitOptions{KDF: &KDFParams{N: 16, R: 1, P: 1}}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte(`[1]`))
	f.Add(r.enc.EncodeAll([]byte(`{"packs":[]}`), []byte{2}))
	f.Add([]byte{2})
	f.Add([]byte{3, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, plain []byte) {
		sealed, err := r.key.Seal(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		out, err := r.openUnpacked("fuzz", sealed)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Object != "fuzz" {
				t.Fatalf("error is not a CorruptError naming the file: %v", err)
			}
			return
		}
		if len(plain) > 0 && (plain[0] == '{' || plain[0] == '[') && !bytes.Equal(out, plain) {
			t.Fatal("JSON plaintext changed")
		}
	})
}
