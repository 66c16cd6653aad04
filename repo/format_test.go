package repo

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/internal/crypto"
)

// seqID returns an ID whose bytes count up from first.
func seqID(first byte) ID {
	var id ID
	for i := range id {
		id[i] = first + byte(i)
	}
	return id
}

func mustKey(t testing.TB) *crypto.Key {
	t.Helper()
	k, err := crypto.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func asCorrupt(t *testing.T, err error, object string) {
	t.Helper()
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("want *CorruptError, got %T: %v", err, err)
	}
	if !strings.Contains(ce.Object, object) || !strings.Contains(err.Error(), object) {
		t.Fatalf("error does not name %q: object %q, %v", object, ce.Object, err)
	}
}

// ---- pack headers ----

func TestHeaderEntryBytes(t *testing.T) {
	blobs := []Blob{
		{BlobHandle: BlobHandle{ID: seqID(0x00), Type: DataBlob}, Length: 0x01020304},
		{BlobHandle: BlobHandle{ID: seqID(0x20), Type: TreeBlob}, Length: 100},
		{BlobHandle: BlobHandle{ID: seqID(0x40), Type: DataBlob}, Length: 0x50, UncompressedLength: 0x0a0b0c0d},
		{BlobHandle: BlobHandle{ID: seqID(0x60), Type: TreeBlob}, Length: 0xfffffffe, UncompressedLength: 1},
	}
	hdr, err := EncodeHeader(blobs)
	if err != nil {
		t.Fatal(err)
	}
	want := "00" + "04030201" + seqID(0x00).String() +
		"01" + "64000000" + seqID(0x20).String() +
		"02" + "50000000" + "0d0c0b0a" + seqID(0x40).String() +
		"03" + "feffffff" + "01000000" + seqID(0x60).String()
	if got := hex.EncodeToString(hdr); got != want {
		t.Fatalf("header\n got %s\nwant %s", got, want)
	}
	if len(hdr) != 37+37+41+41 {
		t.Fatalf("header is %d bytes", len(hdr))
	}

	back, err := DecodeHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	wantOffsets := []uint32{0, 0x01020304, 0x01020304 + 100, 0x01020304 + 100 + 0x50}
	for i := range blobs {
		w := blobs[i]
		w.Offset = wantOffsets[i]
		if back[i] != w {
			t.Errorf("entry %d: got %+v, want %+v", i, back[i], w)
		}
	}
	if len(back) != len(blobs) {
		t.Fatalf("%d entries", len(back))
	}

	if _, err := EncodeHeader([]Blob{{BlobHandle: BlobHandle{ID: seqID(1), Type: InvalidBlob}, Length: 40}}); err == nil {
		t.Error("invalid blob type encoded")
	}
	if _, err := EncodeHeader([]Blob{{BlobHandle: BlobHandle{ID: seqID(1), Type: 7}, Length: 40, UncompressedLength: 3}}); err == nil {
		t.Error("unknown compressed blob type encoded")
	}
}

func entryBytes(typ byte, length uint32, ulen uint32, id ID) []byte {
	b := []byte{typ}
	b = binary.LittleEndian.AppendUint32(b, length)
	if typ >= 2 {
		b = binary.LittleEndian.AppendUint32(b, ulen)
	}
	return append(b, id[:]...)
}

func TestDecodeHeaderErrors(t *testing.T) {
	good := entryBytes(0, 40, 0, seqID(1))
	cases := map[string][]byte{
		"empty":                nil,
		"type 4":               entryBytes(4, 40, 0, seqID(1)),
		"type 0xff":            append([]byte{0xff}, good[1:]...),
		"one byte":             {0},
		"truncated plain":      good[:36],
		"truncated compressed": entryBytes(2, 40, 10, seqID(1))[:40],
		"trailing partial":     append(bytes.Clone(good), good[:10]...),
		"trailing type byte":   append(bytes.Clone(good), 1),
		"ulen zero":            entryBytes(3, 40, 0, seqID(1)),
		"length below seal":    entryBytes(0, 31, 0, seqID(1)),
		"length zero":          entryBytes(1, 0, 0, seqID(1)),
		"compressed too short": entryBytes(2, 31, 100, seqID(1)),
		// Offsets past 4 GiB cannot be expressed in an index.
		"offset past 4 GiB": bytes.Join([][]byte{
			entryBytes(0, 0xffffffff, 0, seqID(1)),
			entryBytes(0, 0xffffffff, 0, seqID(2)),
			entryBytes(0, 40, 0, seqID(3)),
		}, nil),
	}
	for name, hdr := range cases {
		if blobs, err := DecodeHeader(hdr); err == nil {
			t.Errorf("%s: accepted: %+v", name, blobs)
		}
	}
	// The boundary: a blob that starts exactly at 2^32-1 is fine.
	blobs, err := DecodeHeader(append(entryBytes(0, 0xffffffff, 0, seqID(1)), entryBytes(0, 40, 0, seqID(2))...))
	if err != nil {
		t.Fatal(err)
	}
	if blobs[1].Offset != 0xffffffff {
		t.Fatalf("offset %d", blobs[1].Offset)
	}
	// The smallest blob (an empty plaintext) is 32 bytes.
	if _, err := DecodeHeader(entryBytes(0, 32, 0, seqID(1))); err != nil {
		t.Fatalf("32-byte blob rejected: %v", err)
	}
}

func TestPackSize(t *testing.T) {
	blobs := []Blob{
		{BlobHandle: BlobHandle{Type: DataBlob}, Length: 1000},
		{BlobHandle: BlobHandle{Type: DataBlob}, Length: 200, UncompressedLength: 5000},
		{BlobHandle: BlobHandle{Type: TreeBlob}, Length: 77},
		{BlobHandle: BlobHandle{Type: TreeBlob}, Length: 33, UncompressedLength: 1},
	}
	want := int64(1000+200+77+33) + 37 + 41 + 37 + 41 + 32 + 4
	if got := PackSize(blobs); got != want {
		t.Fatalf("PackSize %d, want %d", got, want)
	}
	if got := PackSize(blobs[:1]); got != 1000+37+36 {
		t.Fatalf("one blob: %d", got)
	}
	// No int32 overflow for large packs.
	big := []Blob{{Length: 0xffffffff}, {Length: 0xffffffff}}
	if got := PackSize(big); got != 2*0xffffffff+2*37+36 {
		t.Fatalf("large pack: %d", got)
	}
}

type testBlob struct {
	h     BlobHandle
	plain []byte
	ulen  uint32
}

// Blob mixes for buildPack.
const (
	allPlain      = iota // uncompressed data blobs
	mixedBlobs           // data and tree, some compressed, the first empty
	allCompressed        // compressed data blobs
)

// buildPack seals n blobs of the given mix into a finished pack.
func buildPack(t *testing.T, key *crypto.Key, n int, mix int) (*finishedPack, []testBlob) {
	t.Helper()
	p := newPackBuilder(0)
	var tbs []testBlob
	for i := 0; i < n; i++ {
		plain := []byte(fmt.Sprintf("blob %d %s", i, strings.Repeat("x", i%50)))
		typ := DataBlob
		var ulen uint32
		switch mix {
		case mixedBlobs:
			if i%2 == 1 {
				typ = TreeBlob
			}
			if i%3 == 0 {
				ulen = uint32(len(plain) * 3) // the builder does not look inside
			}
			if i == 0 {
				plain = nil // an empty blob: 32 sealed bytes
				ulen = 0
			}
		case allCompressed:
			ulen = uint32(len(plain) + 1)
		}
		h := BlobHandle{ID: Hash(plain), Type: typ}
		if i > 0 && h.ID == tbs[0].h.ID {
			t.Fatal("duplicate test blob")
		}
		sealed, err := key.Seal(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		p.add(h, sealed, ulen)
		tbs = append(tbs, testBlob{h: h, plain: plain, ulen: ulen})
	}
	fp, err := p.finish(key)
	if err != nil {
		t.Fatal(err)
	}
	return fp, tbs
}

func packHandle(id ID) backend.Handle {
	return backend.Handle{Type: backend.PackFile, Name: id.String()}
}

func checkFinishedPack(t *testing.T, key *crypto.Key, fp *finishedPack, tbs []testBlob) {
	t.Helper()
	if fp.id != ID(sha256.Sum256(fp.data)) {
		t.Fatal("pack ID is not the SHA-256 of its bytes")
	}
	if sum := md5.Sum(fp.data); !bytes.Equal(fp.source().MD5(), sum[:]) {
		t.Fatal("pack MD5 wrong")
	}
	if sum := sha256.Sum256(fp.data); !bytes.Equal(fp.source().SHA256(), sum[:]) {
		t.Fatal("pack source's SHA-256 is not that of its bytes")
	}
	if int64(len(fp.data)) != PackSize(fp.blobs) {
		t.Fatalf("pack is %d bytes, PackSize %d", len(fp.data), PackSize(fp.blobs))
	}
	hdrLen := binary.LittleEndian.Uint32(fp.data[len(fp.data)-4:])
	var entries int
	for _, b := range fp.blobs {
		entries += entrySize(b)
	}
	if int(hdrLen) != entries+crypto.Overhead {
		t.Fatalf("header length field %d, want %d", hdrLen, entries+crypto.Overhead)
	}
	var off uint32
	for i, b := range fp.blobs {
		if b.BlobHandle != tbs[i].h || b.UncompressedLength != tbs[i].ulen || b.Offset != off {
			t.Fatalf("blob %d: %+v", i, b)
		}
		plain, err := key.Open(nil, fp.data[b.Offset:b.Offset+b.Length])
		if err != nil {
			t.Fatalf("blob %d does not open at its offset: %v", i, err)
		}
		if !bytes.Equal(plain, tbs[i].plain) {
			t.Fatalf("blob %d content differs", i)
		}
		off += b.Length
	}
	hdr, err := key.Open(nil, fp.data[off:len(fp.data)-4])
	if err != nil {
		t.Fatalf("header does not follow the last blob: %v", err)
	}
	want, _ := EncodeHeader(fp.blobs)
	if !bytes.Equal(hdr, want) {
		t.Fatal("sealed header differs from EncodeHeader")
	}
}

// countLoads counts Load calls on be.
func countLoads(be *mem.Backend) *atomic.Int32 {
	var n atomic.Int32
	be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpLoad {
			n.Add(1)
		}
		return nil
	})
	return &n
}

func TestPackRoundTrip(t *testing.T) {
	ctx := context.Background()
	key := mustKey(t)
	for _, tc := range []struct {
		name  string
		n     int
		mix   int
		loads int32
	}{
		{"one blob", 1, allPlain, 1},
		{"one compressed blob", 1, allCompressed, 1},
		{"mixed", 7, mixedBlobs, 1},
		{"16 plain fit the tail", 16, allPlain, 1},
		{"17 plain need a second load", 17, allPlain, 2},
		{"15 compressed fit the tail", 15, allCompressed, 1},
		{"16 compressed need a second load", 16, allCompressed, 2},
		{"100 mixed", 100, mixedBlobs, 2},
		{"1000 compressed", 1000, allCompressed, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp, tbs := buildPack(t, key, tc.n, tc.mix)
			checkFinishedPack(t, key, fp, tbs)
			be := mem.New()
			// Through the upload path: mem checks length and MD5.
			if err := be.Save(ctx, packHandle(fp.id), fp.source()); err != nil {
				t.Fatal(err)
			}
			if stored, _ := be.Get(packHandle(fp.id)); !bytes.Equal(stored, fp.data) {
				t.Fatal("stored pack differs")
			}
			loads := countLoads(be)
			blobs, err := readPackHeader(ctx, be, key, fp.id, int64(len(fp.data)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(blobs, fp.blobs) {
				t.Fatalf("read header %+v\nwant %+v", blobs, fp.blobs)
			}
			if got := loads.Load(); got != tc.loads {
				t.Errorf("%d loads, want %d", got, tc.loads)
			}
		})
	}
}

func TestPackSourceRewind(t *testing.T) {
	fp, _ := buildPack(t, mustKey(t), 3, allPlain)
	src := fp.source()
	buf := make([]byte, 10)
	if n, err := src.Read(buf); n != 10 || err != nil {
		t.Fatal(n, err)
	}
	if err := src.Rewind(); err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	if _, err := all.ReadFrom(src); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all.Bytes(), fp.data) || src.Length() != int64(len(fp.data)) || !bytes.Equal(src.MD5(), fp.md5) {
		t.Fatal("source differs from pack")
	}
}

func TestPackBuilderRefusesInvalidBlob(t *testing.T) {
	p := newPackBuilder(0)
	p.add(BlobHandle{ID: seqID(1)}, make([]byte, 40), 0)
	if _, err := p.finish(mustKey(t)); err == nil {
		t.Fatal("pack with an untyped blob finished")
	}
}

func TestReadPackHeaderDamage(t *testing.T) {
	ctx := context.Background()
	key := mustKey(t)
	for _, n := range []int{3, 100} {
		fp, _ := buildPack(t, key, n, mixedBlobs)
		good := fp.data
		name := packHandle(fp.id).String()
		hdrLen := int(binary.LittleEndian.Uint32(good[len(good)-4:]))
		hdrStart := len(good) - 4 - hdrLen

		withLen := func(v uint32) []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint32(b[len(b)-4:], v)
			return b
		}
		flip := func(i int) []byte {
			b := bytes.Clone(good)
			b[i] ^= 0x40
			return b
		}
		otherKey := mustKey(t)
		resealed := func(hdr []byte, k *crypto.Key) []byte {
			s, err := k.Seal(nil, hdr)
			if err != nil {
				t.Fatal(err)
			}
			b := append(bytes.Clone(good[:hdrStart]), s...)
			return binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		}
		realHdr, _ := EncodeHeader(fp.blobs)
		biggerBlob := append([]Blob(nil), fp.blobs...)
		biggerBlob[0].Length += 10

		cases := map[string][]byte{
			"empty":                  {},
			"tiny":                   good[:10],
			"just the length":        good[len(good)-4:],
			"truncated by one":       good[:len(good)-1],
			"header cut":             good[:len(good)-10],
			"last blob cut":          append(bytes.Clone(good[:hdrStart-1]), good[hdrStart:]...),
			"first byte missing":     good[1:],
			"padded":                 append(bytes.Clone(good), make([]byte, 7)...),
			"padded 4 zero bytes":    append(bytes.Clone(good), 0, 0, 0, 0),
			"junk before header":     append(append(bytes.Clone(good[:hdrStart]), 1, 2, 3), good[hdrStart:]...),
			"header length +1":       withLen(uint32(hdrLen + 1)),
			"header length -1":       withLen(uint32(hdrLen - 1)),
			"header length 0":        withLen(0),
			"header length max":      withLen(0xffffffff),
			"header length = size":   withLen(uint32(len(good))),
			"header length size-4":   withLen(uint32(len(good) - 4)),
			"header length 17 MiB":   withLen(17 << 20),
			"header IV flipped":      flip(hdrStart),
			"header entry flipped":   flip(hdrStart + 20),
			"header tag flipped":     flip(len(good) - 5),
			"header of another key":  resealed(realHdr, otherKey),
			"header not entries":     resealed([]byte("this is not a pack header at all, sorry"), key),
			"header empty plaintext": resealed(nil, key),
			"header lies on length":  resealed(func() []byte { h, _ := EncodeHeader(biggerBlob); return h }(), key),
			"header one entry short": resealed(realHdr[:len(realHdr)-entrySize(fp.blobs[len(fp.blobs)-1])], key),
		}
		for cname, data := range cases {
			t.Run(fmt.Sprintf("%d/%s", n, cname), func(t *testing.T) {
				be := mem.New()
				be.Put(packHandle(fp.id), data)
				blobs, err := readPackHeader(ctx, be, key, fp.id, int64(len(data)))
				if err == nil {
					t.Fatalf("accepted: %d blobs", len(blobs))
				}
				asCorrupt(t, err, name)
			})
		}
	}
}

// An index that says the pack is larger or smaller than the stored file:
// an error (from the backend or the size check), never a panic.
func TestReadPackHeaderWrongSize(t *testing.T) {
	ctx := context.Background()
	key := mustKey(t)
	fp, _ := buildPack(t, key, 5, allPlain)
	be := mem.New()
	be.Put(packHandle(fp.id), fp.data)
	for _, size := range []int64{-1, 0, 1, 68, 69, int64(len(fp.data)) - 1, int64(len(fp.data)) + 1, int64(len(fp.data)) * 2, 1 << 40} {
		if _, err := readPackHeader(ctx, be, key, fp.id, size); err == nil {
			t.Errorf("size %d accepted", size)
		}
	}
	if _, err := readPackHeader(ctx, be, key, seqID(9), int64(len(fp.data))); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("missing pack: %v", err)
	}
}

// ---- index ----

func sampleIndex() *IndexJSON {
	return &IndexJSON{Packs: []IndexPackJSON{
		{ID: seqID(0x10), Blobs: []IndexBlobJSON{
			{ID: seqID(0x20), Type: DataBlob, Offset: 0, Length: 100},
			{ID: seqID(0x30), Type: DataBlob, Offset: 100, Length: 50, UncompressedLength: 4000},
		}},
		{ID: seqID(0x40), Blobs: []IndexBlobJSON{
			{ID: seqID(0x50), Type: TreeBlob, Offset: 0, Length: 0xffffffff, UncompressedLength: 0xffffffff},
		}},
	}}
}

func TestIndexJSONExact(t *testing.T) {
	ij := &IndexJSON{Packs: []IndexPackJSON{{ID: seqID(1), Blobs: []IndexBlobJSON{
		{ID: seqID(2), Type: DataBlob, Offset: 0, Length: 100},
		{ID: seqID(3), Type: TreeBlob, Offset: 100, Length: 60, UncompressedLength: 300},
	}}}}
	buf, err := json.Marshal(ij)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"packs":[{"id":"` + seqID(1).String() + `","blobs":[` +
		`{"id":"` + seqID(2).String() + `","type":"data","offset":0,"length":100},` +
		`{"id":"` + seqID(3).String() + `","type":"tree","offset":100,"length":60,"uncompressed_length":300}]}]}`
	if string(buf) != want {
		t.Fatalf("got  %s\nwant %s", buf, want)
	}
	if strings.Contains(string(buf), "supersedes") {
		t.Fatal("supersedes written")
	}
}

func TestIndexJSONRoundTrip(t *testing.T) {
	ij := sampleIndex()
	buf, err := json.Marshal(ij)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeIndex(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, ij) {
		t.Fatalf("got %+v\nwant %+v", back, ij)
	}

	// The early format: a bare list of packs (leading whitespace too).
	packs, _ := json.Marshal(ij.Packs)
	for _, old := range [][]byte{packs, append([]byte(" \n\t"), packs...)} {
		back, err := DecodeIndex(old)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back.Packs, ij.Packs) || back.Supersedes != nil {
			t.Fatalf("old format: %+v", back)
		}
	}

	// supersedes is accepted on read, unknown fields are ignored.
	withExtra := `{"supersedes":["` + seqID(0x77).String() + `"],"rustic":{"x":1},"packs":[{"id":"` + seqID(1).String() +
		`","time":"2024-01-01T00:00:00Z","size":123,"blobs":[{"id":"` + seqID(2).String() + `","type":"data","offset":5,"length":40,"extra":true}]}]}`
	back, err = DecodeIndex([]byte(withExtra))
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Supersedes) != 1 || back.Supersedes[0] != seqID(0x77) || len(back.Packs) != 1 || back.Packs[0].Blobs[0].Offset != 5 {
		t.Fatalf("got %+v", back)
	}
	// uncompressed_length 0 written explicitly means uncompressed.
	zero := `{"packs":[{"id":"` + seqID(1).String() + `","blobs":[{"id":"` + seqID(2).String() + `","type":"tree","offset":0,"length":40,"uncompressed_length":0}]}]}`
	if back, err = DecodeIndex([]byte(zero)); err != nil || back.Packs[0].Blobs[0].UncompressedLength != 0 {
		t.Fatalf("explicit zero: %v", err)
	}
	// An empty index is valid.
	for _, s := range []string{`{"packs":[]}`, `{}`, `[]`, `{"packs":null}`} {
		if _, err := DecodeIndex([]byte(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}

func TestDecodeIndexErrors(t *testing.T) {
	blob := func(fields string) string {
		return `{"packs":[{"id":"` + seqID(1).String() + `","blobs":[{"id":"` + seqID(2).String() + `",` + fields + `}]}]}`
	}
	cases := map[string]string{
		"type blob":           blob(`"type":"blob","offset":0,"length":40`),
		"type empty":          blob(`"type":"","offset":0,"length":40`),
		"type missing":        blob(`"offset":0,"length":40`),
		"type number":         blob(`"type":1,"offset":0,"length":40`),
		"type upper":          blob(`"type":"DATA","offset":0,"length":40`),
		"length missing":      blob(`"type":"data","offset":0`),
		"length 31":           blob(`"type":"data","offset":0,"length":31`),
		"length 2^32":         blob(`"type":"data","offset":0,"length":4294967296`),
		"offset 2^32":         blob(`"type":"data","offset":4294967296,"length":40`),
		"ulen 2^32":           blob(`"type":"data","offset":0,"length":40,"uncompressed_length":4294967296`),
		"negative offset":     blob(`"type":"data","offset":-1,"length":40`),
		"float length":        blob(`"type":"data","offset":0,"length":40.5`),
		"bad blob id":         `{"packs":[{"id":"` + seqID(1).String() + `","blobs":[{"id":"abc","type":"data","offset":0,"length":40}]}]}`,
		"bad pack id":         `{"packs":[{"id":"` + strings.ToUpper(seqID(1).String())[:63] + `","blobs":[]}]}`,
		"not json":            `{"packs":`,
		"old format not json": `[{"id":`,
		"packs not a list":    `{"packs":{}}`,
		"string":              `"index"`,
		"bad supersedes":      `{"supersedes":["xyz"],"packs":[]}`,
		"empty":               ``,
	}
	for name, s := range cases {
		if ij, err := DecodeIndex([]byte(s)); err == nil {
			t.Errorf("%s: accepted %+v", name, ij)
		}
	}
}

func TestIndexLookup(t *testing.T) {
	idx := NewIndex()
	pA, pB := seqID(0xa0), seqID(0xb0)
	data := BlobHandle{ID: seqID(1), Type: DataBlob}
	tree := BlobHandle{ID: seqID(1), Type: TreeBlob} // same bytes as a tree: another blob
	other := BlobHandle{ID: seqID(2), Type: DataBlob}
	idx.add(pA, []Blob{
		{BlobHandle: other, Offset: 100, Length: 60},
		{BlobHandle: data, Offset: 0, Length: 100, UncompressedLength: 500},
	})
	idx.add(pB, []Blob{
		{BlobHandle: tree, Offset: 0, Length: 40},
		{BlobHandle: data, Offset: 40, Length: 100}, // duplicate: first location wins
	})
	if idx.Len() != 3 {
		t.Fatalf("Len %d", idx.Len())
	}
	pb, ok := idx.Lookup(data)
	if !ok || pb.PackID != pA || pb.Offset != 0 || pb.Length != 100 || pb.UncompressedLength != 500 || pb.BlobHandle != data {
		t.Fatalf("data lookup %+v %v", pb, ok)
	}
	pb, ok = idx.Lookup(tree)
	if !ok || pb.PackID != pB || pb.Length != 40 || pb.IsCompressed() {
		t.Fatalf("tree lookup %+v %v", pb, ok)
	}
	if !idx.Has(other) || !idx.Has(tree) || idx.Has(BlobHandle{ID: seqID(2), Type: TreeBlob}) || idx.Has(BlobHandle{ID: seqID(3), Type: DataBlob}) {
		t.Fatal("Has wrong")
	}
	if _, ok := idx.Lookup(BlobHandle{ID: seqID(3), Type: DataBlob}); ok {
		t.Fatal("unknown blob found")
	}
	if got := idx.Packs(); len(got) != 2 || got[0] != pA || got[1] != pB {
		t.Fatalf("Packs %v", got)
	}
	pbs := idx.PackBlobs()
	if a := pbs[pA]; len(a) != 2 || a[0].BlobHandle != data || a[1].BlobHandle != other || a[0].Offset != 0 || a[1].Offset != 100 {
		t.Fatalf("PackBlobs[A] not sorted by offset: %+v", a)
	}
	// B's first blob is the tree; whether the duplicate data blob is listed
	// too is not specified, but if it is, it is at its own offset.
	if b := pbs[pB]; len(b) < 1 || b[0].BlobHandle != tree || (len(b) > 1 && (b[1].BlobHandle != data || b[1].Offset != 40)) {
		t.Fatalf("PackBlobs[B] %+v", b)
	}

	// addFile: same content through the index file path.
	idx2 := NewIndex()
	fileID := seqID(0xf0)
	idx2.addFile(fileID, sampleIndex())
	if f := idx2.Files(); len(f) != 1 || f[0] != fileID {
		t.Fatalf("Files %v", f)
	}
	pb, ok = idx2.Lookup(BlobHandle{ID: seqID(0x30), Type: DataBlob})
	if !ok || pb.PackID != seqID(0x10) || pb.Offset != 100 || pb.Length != 50 || pb.UncompressedLength != 4000 {
		t.Fatalf("addFile lookup %+v", pb)
	}
	pb, ok = idx2.Lookup(BlobHandle{ID: seqID(0x50), Type: TreeBlob})
	if !ok || pb.Length != 0xffffffff || pb.UncompressedLength != 0xffffffff {
		t.Fatalf("addFile lookup large %+v", pb)
	}
}

// saveIndex starts a new index file once one reaches maxIndexBlobs blobs,
// never splitting a pack, and every pack ends up in exactly one file.
func TestSaveIndexSplits(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t, 2, Options{})
	idx := NewIndex()
	mk := func(pack byte, n int) {
		blobs := make([]Blob, n)
		for i := range blobs {
			var id ID
			id[0] = pack
			binary.LittleEndian.PutUint32(id[1:], uint32(i))
			blobs[i] = Blob{BlobHandle: BlobHandle{ID: id, Type: DataBlob}, Offset: uint32(i * 40), Length: 40}
		}
		var pid ID
		pid[0], pid[31] = pack, 0xee
		idx.addStored(pid, blobs)
	}
	mk(1, maxIndexBlobs-1)
	mk(2, 1)   // first file: exactly maxIndexBlobs blobs, then a new file
	mk(3, 10)  // second file
	mk(4, 100) // second file
	if err := r.saveIndex(ctx, idx); err != nil {
		t.Fatal(err)
	}
	if n := countType(be.Handles(), backend.IndexFile); n != 2 {
		t.Fatalf("%d index files, want 2", n)
	}
	if len(idx.Files()) != 2 {
		t.Fatalf("Files %d", len(idx.Files()))
	}
	// Nothing left to save.
	if err := r.saveIndex(ctx, idx); err != nil || countType(be.Handles(), backend.IndexFile) != 2 {
		t.Fatalf("second save: %v", err)
	}
	packsSeen := map[ID]int{}
	blobs := 0
	var files [][]byte // the first byte of each pack ID, per file
	for _, h := range be.Handles() {
		if h.Type != backend.IndexFile {
			continue
		}
		id, _ := ParseID(h.Name)
		plain, err := r.loadUnpacked(ctx, backend.IndexFile, id)
		if err != nil {
			t.Fatal(err)
		}
		if plain[0] != '{' {
			t.Fatalf("index plaintext starts with %q", plain[0])
		}
		ij, err := DecodeIndex(plain)
		if err != nil {
			t.Fatal(err)
		}
		if ij.Supersedes != nil {
			t.Fatal("supersedes written")
		}
		var f []byte
		for _, p := range ij.Packs {
			packsSeen[p.ID]++
			blobs += len(p.Blobs)
			f = append(f, p.ID[0])
		}
		files = append(files, f)
	}
	got := fmt.Sprint(files)
	if got != "[[1 2] [3 4]]" && got != "[[3 4] [1 2]]" {
		t.Fatalf("index files hold packs %s, want [1 2] and [3 4]", got)
	}
	if len(packsSeen) != 4 || blobs != maxIndexBlobs-1+1+10+100 {
		t.Fatalf("packs %v, blobs %d", packsSeen, blobs)
	}
	for p, n := range packsSeen {
		if n != 1 {
			t.Fatalf("pack %s in %d files", p.Str(), n)
		}
	}
}

// Blobs saved through a Writer: after Flush, a fresh Open finds every blob
// in the index, and each pack's header equals its index entries exactly.
func TestWriterIndexMatchesHeaders(t *testing.T) {
	ctx := context.Background()
	for _, v := range []uint{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			r, be := newTestRepo(t, v, Options{PackSize: MinPackSize})
			w, err := r.NewWriter(ctx)
			if err != nil {
				t.Fatal(err)
			}
			saved := map[BlobHandle][]byte{}
			add := func(typ BlobType, data []byte) {
				id, isNew, err := w.SaveBlob(ctx, typ, data)
				if err != nil {
					t.Fatal(err)
				}
				h := BlobHandle{ID: id, Type: typ}
				if _, dup := saved[h]; dup == isNew {
					t.Fatalf("SaveBlob new=%v for a blob seen=%v", isNew, dup)
				}
				saved[h] = data
			}
			for i := 0; i < 10; i++ {
				add(DataBlob, mixedData(int64(i), 900<<10)) // several packs
			}
			add(DataBlob, []byte{})
			add(DataBlob, []byte{}) // duplicate in session
			add(TreeBlob, []byte("{\"nodes\":[]}\n"))
			add(DataBlob, []byte("{\"nodes\":[]}\n")) // same bytes, other type
			for i := 0; i < 40; i++ {
				add(TreeBlob, []byte(fmt.Sprintf("tree %d", i)))
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if w.Stats().Packs < 2 {
				t.Fatalf("only %d packs", w.Stats().Packs)
			}

			r2, err := Open(ctx, be, "secret", Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer r2.Close()
			idx, err := r2.Index(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if idx.Len() != len(saved) {
				t.Fatalf("index has %d blobs, saved %d", idx.Len(), len(saved))
			}
			for h, data := range saved {
				got, err := r2.LoadBlob(ctx, h)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%v differs", h)
				}
			}
			packFiles := map[ID]int64{}
			err = be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
				id, err := ParseID(fi.Name)
				packFiles[id] = fi.Size
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			for pack, blobs := range idx.PackBlobs() {
				size, ok := packFiles[pack]
				if !ok {
					t.Fatalf("indexed pack %s not stored", pack.Str())
				}
				hdr, err := readPackHeader(ctx, be, r2.key, pack, size)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(hdr, blobs) {
					t.Fatalf("pack %s: header %+v\nindex %+v", pack.Str(), hdr, blobs)
				}
				types := map[BlobType]bool{}
				for _, b := range hdr {
					types[b.Type] = true
					if v == 1 && b.IsCompressed() {
						t.Fatal("compressed blob in a version 1 repository")
					}
					if v == 2 && b.DataLength() > 0 && !b.IsCompressed() {
						t.Fatalf("uncompressed non-empty blob in version 2: %+v", b)
					}
				}
				if len(types) != 1 {
					t.Fatalf("pack %s mixes blob types", pack.Str())
				}
				raw, _ := be.Get(packHandle(pack))
				if Hash(raw) != pack {
					t.Fatalf("pack %s is not named by its hash", pack.Str())
				}
			}
			if len(packFiles) != len(idx.Packs()) {
				t.Fatalf("%d pack files, %d indexed", len(packFiles), len(idx.Packs()))
			}

			// A new session deduplicates against the stored index.
			w2, err := r2.NewWriter(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for h, data := range saved {
				if _, isNew, err := w2.SaveBlob(ctx, h.Type, data); err != nil || isNew {
					t.Fatalf("%v saved again (new=%v, %v)", h, isNew, err)
				}
			}
			if err := w2.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if st := w2.Stats(); st.Packs != 0 || st.DataBlobs+st.TreeBlobs != 0 {
				t.Fatalf("second session stored %+v", st)
			}
		})
	}
}

// ---- trees ----

func mustEncodeTree(t *testing.T, tr *Tree) string {
	t.Helper()
	buf, err := EncodeTree(tr)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf)
}

func TestTreeExactBytes(t *testing.T) {
	cet := time.FixedZone("", 3600)
	mt := time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC)
	at := time.Date(2024, 1, 2, 3, 4, 6, 0, time.UTC)
	ct := time.Date(2024, 1, 2, 4, 4, 7, 0, cet)
	content := seqID(0x11)
	subtree := seqID(0x33)
	tr := &Tree{Nodes: []*Node{
		{Name: "dir", Type: NodeDir, Mode: fs.ModeDir | 0o755, ModTime: mt, AccessTime: mt, ChangeTime: mt, Subtree: &subtree},
		{Name: "empty", Type: NodeFile, Mode: 0o644, ModTime: mt, AccessTime: mt, ChangeTime: mt, UID: 1, GID: 2, Content: []ID{}},
		{Name: "file", Type: NodeFile, Mode: 0o644, ModTime: mt, AccessTime: at, ChangeTime: ct, UID: 1000, GID: 100,
			User: "alice", Group: "staff", Inode: 42, DeviceID: 7, Size: 5, Links: 1, Content: []ID{content}},
		{Name: "link", Type: NodeSymlink, Mode: fs.ModeSymlink | 0o777, ModTime: mt, AccessTime: mt, ChangeTime: mt, LinkTarget: "file"},
	}}
	times := `"mtime":"2024-01-02T03:04:05.123456789Z","atime":"2024-01-02T03:04:05.123456789Z","ctime":"2024-01-02T03:04:05.123456789Z"`
	want := `{"nodes":[` +
		`{"name":"dir","type":"dir","mode":2147484141,` + times + `,"uid":0,"gid":0,"content":null,"subtree":"` + subtree.String() + `"},` +
		`{"name":"empty","type":"file","mode":420,` + times + `,"uid":1,"gid":2,"content":[]},` +
		`{"name":"file","type":"file","mode":420,"mtime":"2024-01-02T03:04:05.123456789Z","atime":"2024-01-02T03:04:06Z","ctime":"2024-01-02T04:04:07+01:00",` +
		`"uid":1000,"gid":100,"user":"alice","group":"staff","inode":42,"device_id":7,"size":5,"links":1,"content":["` + content.String() + `"]},` +
		`{"name":"link","type":"symlink","mode":134218239,` + times + `,"uid":0,"gid":0,"linktarget":"file","content":null}` +
		"]}\n"
	got := mustEncodeTree(t, tr)
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	back, err := DecodeTree([]byte(got))
	if err != nil {
		t.Fatal(err)
	}
	if again := mustEncodeTree(t, back); again != want {
		t.Fatalf("re-encoded\n%s", again)
	}
	if back.Nodes[1].Content == nil || len(back.Nodes[1].Content) != 0 || back.Nodes[0].Content != nil {
		t.Fatal("content [] / null not preserved")
	}
	if !back.Nodes[2].ChangeTime.Equal(ct) || back.Nodes[3].LinkTarget != "file" {
		t.Fatalf("fields lost: %+v", back.Nodes[2])
	}

	// Every optional field, in restic's order.
	full := &Node{Name: "x", Type: "dev", Mode: fs.ModeDevice | 0o600, ModTime: mt, AccessTime: mt, ChangeTime: mt, UID: 1, GID: 2,
		User: "u", Group: "g", Inode: 3, DeviceID: 4, Size: 5, Links: 6, LinkTarget: "t",
		ExtendedAttributes: []ExtendedAttribute{{Name: "user.k", Value: []byte("v")}},
		GenericAttributes:  map[string]json.RawMessage{"windows.security_descriptor": json.RawMessage(`"AQ=="`)},
		Device:             8, Content: []ID{content}, Subtree: &subtree, Error: "oops"}
	buf, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	order := []string{"name", "type", "mode", "mtime", "atime", "ctime", "uid", "gid", "user", "group", "inode", "device_id",
		"size", "links", "linktarget", "extended_attributes", "generic_attributes", "device", "content", "subtree", "error"}
	last := -1
	for _, f := range order {
		i := strings.Index(string(buf), `"`+f+`":`)
		if i < 0 || i <= last {
			t.Fatalf("field %q missing or out of order in %s", f, buf)
		}
		last = i
	}
	if strings.Contains(string(buf), "linktarget_raw") {
		t.Fatal("linktarget_raw for a valid UTF-8 target")
	}
}

func TestTreeModes(t *testing.T) {
	for _, c := range []struct {
		mode fs.FileMode
		want string
	}{
		{0o644, `"mode":420`},
		{fs.ModeDir | 0o755, `"mode":2147484141`},
		{fs.ModeSymlink | 0o777, `"mode":134218239`},
		{0o600, `"mode":384`},
		{0o755 | fs.ModeSetuid, `"mode":8389101`},
	} {
		buf, err := json.Marshal(&Node{Name: "n", Type: NodeFile, Mode: c.mode})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(buf), c.want) {
			t.Errorf("mode %v: %s", c.mode, buf)
		}
	}
	// Mode 0 is omitted, as restic does.
	buf, _ := json.Marshal(&Node{Name: "n", Type: NodeFile})
	if strings.Contains(string(buf), `"mode"`) {
		t.Errorf("zero mode written: %s", buf)
	}
}

func TestTreeNames(t *testing.T) {
	cases := []struct {
		name string
		json string // the name as it appears in the tree's JSON text
	}{
		{"plain.txt", `"plain.txt"`},
		{"with space", `"with space"`},
		{`quo"te`, `"quo\\\"te"`},
		{`back\slash`, `"back\\\\slash"`},
		{"new\nline", `"new\\nline"`},
		{"tab\there", `"tab\\there"`},
		{"cr\rx", `"cr\\rx"`},
		{"nul\x00x", `"nul\\x00x"`},
		{"del\x7fx", `"del\\x7fx"`},
		{"ünïcødé", `"ünïcødé"`},
		{"日本語", `"日本語"`},
		{"emoji😀", `"emoji😀"`},
		{"bad\xffutf8", `"bad\\xffutf8"`},
		{"\xc3", `"\\xc3"`},
		{"sep\u2028x", `"sep\\u2028x"`},
		{"html<&>", `"html\u003c\u0026\u003e"`},
		{"bell\a", `"bell\\a"`},
	}
	for _, c := range cases {
		tr := &Tree{Nodes: []*Node{{Name: c.name, Type: NodeFile, Content: []ID{}}}}
		got := mustEncodeTree(t, tr)
		if !strings.HasPrefix(got, `{"nodes":[{"name":`+c.json+`,"type":"file",`) {
			t.Errorf("%q encodes as %s, want name %s", c.name, got, c.json)
			continue
		}
		back, err := DecodeTree([]byte(got))
		if err != nil {
			t.Errorf("%q: %v", c.name, err)
			continue
		}
		if back.Nodes[0].Name != c.name {
			t.Errorf("%q came back as %q", c.name, back.Nodes[0].Name)
		}
	}

	// A symlink target that is not UTF-8 is stored raw too and restored.
	tr := &Tree{Nodes: []*Node{{Name: "l", Type: NodeSymlink, LinkTarget: "to\xfe\xff", Content: nil}}}
	got := mustEncodeTree(t, tr)
	if !strings.Contains(got, `"linktarget_raw":"dG/+/w=="`) {
		t.Fatalf("no raw link target: %s", got)
	}
	back, err := DecodeTree([]byte(got))
	if err != nil {
		t.Fatal(err)
	}
	if back.Nodes[0].LinkTarget != "to\xfe\xff" {
		t.Fatalf("link target %q", back.Nodes[0].LinkTarget)
	}
	// A name whose stored form is not a valid Go string body is an error.
	for _, bad := range []string{`a\`, `\q`, `"`, `\x4`, `\u12`} {
		j, _ := json.Marshal(bad)
		raw := `{"nodes":[{"name":` + string(j) + `,"type":"file","content":[]}]}`
		if _, err := DecodeTree([]byte(raw)); err == nil {
			t.Errorf("stored name %s accepted", j)
		}
	}
}

func TestEncodeTreeOrder(t *testing.T) {
	n := func(name string) *Node { return &Node{Name: name, Type: NodeFile, Content: []ID{}} }
	for name, nodes := range map[string][]*Node{
		"unsorted":   {n("b"), n("a")},
		"duplicate":  {n("a"), n("a")},
		"dup later":  {n("a"), n("b"), n("b"), n("c")},
		"byte order": {n("a"), n("B")}, // Go string order: "B" < "a"
	} {
		if _, err := EncodeTree(&Tree{Nodes: nodes}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	tr := &Tree{Nodes: []*Node{n("ä"), n("a"), n("B"), n("a.txt"), n("")}}
	tr.Sort()
	var names []string
	for _, x := range tr.Nodes {
		names = append(names, x.Name)
	}
	if strings.Join(names, "|") != "|B|a|a.txt|ä" {
		t.Fatalf("sorted %q", names)
	}
	if _, err := EncodeTree(tr); err != nil {
		t.Fatal(err)
	}
	if tr.Find("a.txt") != tr.Nodes[3] || tr.Find("zz") != nil || tr.Find("") != tr.Nodes[0] {
		t.Fatal("Find wrong")
	}
	// Find also works on an unsorted tree from another writer.
	un := &Tree{Nodes: []*Node{n("z"), n("a"), n("m")}}
	if un.Find("a") != un.Nodes[1] || un.Find("m") != un.Nodes[2] {
		t.Fatal("Find on unsorted tree")
	}
	// An empty tree, as restic writes an empty directory.
	for _, e := range []*Tree{{}, {Nodes: []*Node{}}} {
		if got := mustEncodeTree(t, e); got != "{\"nodes\":[]}\n" {
			t.Fatalf("empty tree %q", got)
		}
	}
}

func TestTreeTimes(t *testing.T) {
	far := time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)
	neg := time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC)
	tr := &Tree{Nodes: []*Node{{Name: "a", Type: NodeFile, ModTime: far, AccessTime: neg, Content: []ID{}}}}
	got := mustEncodeTree(t, tr)
	if !strings.Contains(got, `"mtime":"9999-12-31T23:59:59Z","atime":"0000-01-01T00:00:00Z","ctime":"0001-01-01T00:00:00Z"`) {
		t.Fatalf("times not clamped or zero time not written: %s", got)
	}
	if tr.Nodes[0].ModTime != far {
		t.Fatal("encoding changed the caller's node")
	}
}

func TestDecodeTreeErrors(t *testing.T) {
	sub := seqID(5).String()
	for name, s := range map[string]string{
		"not json":          `{"nodes":[`,
		"null node":         `{"nodes":[null]}`,
		"dir no subtree":    `{"nodes":[{"name":"d","type":"dir","content":null}]}`,
		"bad subtree":       `{"nodes":[{"name":"d","type":"dir","subtree":"xyz"}]}`,
		"bad content id":    `{"nodes":[{"name":"f","type":"file","content":["00"]}]}`,
		"bad time":          `{"nodes":[{"name":"f","type":"file","mtime":"yesterday","content":[]}]}`,
		"nodes not a list":  `{"nodes":{}}`,
		"name not a string": `{"nodes":[{"name":1,"type":"file"}]}`,
		"array":             `[]`,
		"empty":             ``,
		"bad raw target":    `{"nodes":[{"name":"l","type":"symlink","linktarget_raw":"!!"}]}`,
	} {
		if tr, err := DecodeTree([]byte(s)); err == nil {
			t.Errorf("%s: accepted %+v", name, tr)
		}
	}
	// Any valid JSON is readable: whitespace, unknown fields, other field
	// order, a missing nodes list.
	for name, s := range map[string]string{
		"pretty":  "{\n  \"nodes\": [ { \"type\": \"dir\", \"subtree\": \"" + sub + "\", \"name\": \"d\", \"future\": {\"x\": 1} } ]\n}",
		"empty":   `{}`,
		"null":    `{"nodes":null}`,
		"no nl":   `{"nodes":[]}`,
		"unknown": `{"nodes":[],"other":1}`,
	} {
		if _, err := DecodeTree([]byte(s)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A failed index save must not lose the packs it was about to index: the
// shared in-memory index already lists their blobs, so a later backup on
// the same Repository deduplicates against them and writes a snapshot whose
// data is in no index file.
func TestIndexSaveFailureKeepsPacks(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t, 2, Options{})
	data := []byte("a dump that is saved twice")
	failOnce := true
	be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpSave && h.Type == backend.IndexFile && failOnce {
			failOnce = false
			return mem.ErrInjected
		}
		return nil
	})
	if _, err := r.BackupStream(ctx, Stream{Name: "d", Reader: bytes.NewReader(data)}, BackupOptions{}); !errors.Is(err, mem.ErrInjected) {
		t.Fatalf("first backup: %v", err)
	}
	res, err := r.BackupStream(ctx, Stream{Name: "d", Reader: bytes.NewReader(data)}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, be, "secret", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	sn, err := r2.LoadSnapshot(ctx, res.SnapshotID)
	if err != nil {
		t.Fatal(err)
	}
	if got := dumpFile(t, r2, sn, "/d"); !bytes.Equal(got, data) {
		t.Fatal("restored data differs")
	}
}
