package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand"
	"strings"
	"testing"
	"time"

	// restic's format is Poly1305-AES: a MAC keyed per message, built here
	// as the format needs; the package is deprecated for other uses.
	"golang.org/x/crypto/poly1305" //nolint:staticcheck // SA1019, see above
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// fixedKey returns a deterministic valid key.
func fixedKey(seed byte) *Key {
	k := &Key{}
	for i := range k.Encrypt {
		k.Encrypt[i] = seed + byte(i)
	}
	for i := range k.MAC.K {
		k.MAC.K[i] = seed ^ byte(0x40+i)
	}
	for i := range k.MAC.R {
		k.MAC.R[i] = seed ^ byte(0x80+3*i)
	}
	return k
}

func pseudoRandom(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// The four Poly1305-AES examples of Bernstein's paper "The Poly1305-AES
// message-authentication code" (appendix B): r, k (the AES-128 key), the
// nonce n, the message and the expected tag.
var poly1305AESVectors = []struct {
	r, k, nonce, msg, tag string
}{
	{
		r:     "851fc40c3467ac0be05cc20404f3f700",
		k:     "ec074c835580741701425b623235add6",
		nonce: "fb447350c4e868c52ac3275cf9d4327e",
		msg:   "f3f6",
		tag:   "f4c633c3044fc145f84f335cb81953de",
	},
	{
		r:     "a0f3080000f46400d0c7e9076c834403",
		k:     "75deaa25c09f208e1dc4ce6b5cad3fbf",
		nonce: "61ee09218d29b0aaed7e154a2c5509cc",
		msg:   "",
		tag:   "dd3fab2251f11ac759f0887129cc2ee7",
	},
	{
		r:     "48443d0bb0d21109c89a100b5ce2c208",
		k:     "6acb5f61a7176dd320c5c1eb2edcdc74",
		nonce: "ae212a55399729595dea458bc621ff0e",
		msg:   "663cea190ffb83d89593f3f476b6bc24d7e679107ea26adb8caf6652d0656136",
		tag:   "0ee1c16bb73f0f4fd19881753c01cdbe",
	},
	{
		r:     "12976a08c4426d0ce8a82407c4f48207",
		k:     "e1a5668a4d5b66a5f68cc5424ed5982d",
		nonce: "9ae831e743978d3a23527c7128149e3a",
		msg: "ab0812724a7f1e342742cbed374d94d136c6b8795d45b3819830f2c04491faf0" +
			"990c62e48b8018b2c3e4a0fa3134cb67fa83e158c994d961c4cb21095c1bf9",
		tag: "5154ad0d2cb26e01274fc51148491f1b",
	},
}

func TestPoly1305AESVectors(t *testing.T) {
	for i, v := range poly1305AESVectors {
		var m MACKey
		copy(m.R[:], unhex(t, v.r))
		copy(m.K[:], unhex(t, v.k))
		got, err := m.sum(unhex(t, v.nonce), unhex(t, v.msg))
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		if want := unhex(t, v.tag); !bytes.Equal(got[:], want) {
			t.Errorf("vector %d: tag %x, want %x", i, got, want)
		}
	}
}

// R is stored as given; only the Poly1305 computation clamps it. A key with
// unclamped R must give the same tags as its clamped form and keep its bytes
// through JSON.
func TestMACKeyRUnclamped(t *testing.T) {
	k := fixedKey(7)
	for i := range k.MAC.R {
		k.MAC.R[i] = 0xff
	}
	clamped := *k
	for _, i := range []int{3, 7, 11, 15} {
		clamped.MAC.R[i] &= 0x0f
	}
	for _, i := range []int{4, 8, 12} {
		clamped.MAC.R[i] &= 0xfc
	}
	iv, msg := pseudoRandom(1, IVSize), pseudoRandom(2, 100)
	a, err := k.MAC.sum(iv, msg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := clamped.MAC.sum(iv, msg)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("unclamped and clamped R give different tags: %x vs %x", a, b)
	}
	buf, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	var back Key
	if err := json.Unmarshal(buf, &back); err != nil {
		t.Fatal(err)
	}
	if back != *k {
		t.Fatalf("key changed through JSON: R %x, want %x", back.MAC.R, k.MAC.R)
	}
}

// A sealed object from restic's own test data: IV, ciphertext and tag of
// "Dies ist ein Test!" under a fixed key.
func TestOpenKnownAnswer(t *testing.T) {
	k := &Key{}
	copy(k.Encrypt[:], unhex(t, "303e8687b1d7db18421bdc6bb8588ccadac4d59ee87b8ff70c44e635790cafef"))
	copy(k.MAC.K[:], unhex(t, "ef4d8824cb80b2bcc5fbff8a9b12a42c"))
	copy(k.MAC.R[:], unhex(t, "cc8d4b948ee0ebfe1d415de921d10353"))
	sealed := unhex(t, "69fb41c62d12def4593bd71757138606338f621aeaeb39da0fe4f99233f8037a54ea63338a813bcf3f75d8c3cc75dddf8750")
	got, err := k.Open(nil, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "Dies ist ein Test!" {
		t.Fatalf("got %q", got)
	}
	// Every single-bit change anywhere is detected.
	for i := range sealed {
		c := bytes.Clone(sealed)
		c[i] ^= 0x01
		if _, err := k.Open(nil, c); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("bit flip in byte %d: got %v", i, err)
		}
	}
}

func TestSealLayout(t *testing.T) {
	k := fixedKey(3)
	plain := pseudoRandom(3, 1000)
	sealed, err := k.Seal(nil, plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(plain)+Overhead || Overhead != 32 {
		t.Fatalf("sealed %d bytes for %d (overhead %d)", len(sealed), len(plain), Overhead)
	}
	iv, ct, tag := sealed[:16], sealed[16:len(sealed)-16], sealed[len(sealed)-16:]
	// AES-256-CTR with the whole IV as the counter.
	block, err := aes.NewCipher(k.Encrypt[:])
	if err != nil {
		t.Fatal(err)
	}
	dec := make([]byte, len(ct))
	cipher.NewCTR(block, iv).XORKeyStream(dec, ct)
	if !bytes.Equal(dec, plain) {
		t.Fatal("ciphertext is not AES-256-CTR of the plaintext under the IV")
	}
	// Poly1305 over the ciphertext only, keyed with R || AES-128_K(IV).
	kb, err := aes.NewCipher(k.MAC.K[:])
	if err != nil {
		t.Fatal(err)
	}
	var pk [32]byte
	copy(pk[:16], k.MAC.R[:])
	kb.Encrypt(pk[16:], iv)
	var want [16]byte
	poly1305.Sum(&want, ct, &pk)
	if !bytes.Equal(tag, want[:]) {
		t.Fatalf("tag %x, want %x", tag, want)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 15, 16, 17, 1 << 20} {
		plain := pseudoRandom(int64(n), n)
		sealed, err := k.Seal(nil, plain)
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		if len(sealed) != n+Overhead {
			t.Fatalf("%d: sealed length %d", n, len(sealed))
		}
		if n >= 16 && bytes.Contains(sealed, plain[:16]) {
			t.Fatalf("%d: plaintext visible in sealed bytes", n)
		}
		got, err := k.Open(nil, sealed)
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("%d: round trip differs", n)
		}
		// Two seals of the same plaintext differ (random IV).
		again, err := k.Seal(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(again[:IVSize], sealed[:IVSize]) {
			t.Fatalf("%d: same IV twice", n)
		}
	}
}

func TestSealOpenAppend(t *testing.T) {
	k := fixedKey(9)
	plain := []byte("some plaintext")
	prefix := []byte("prefix:")

	// dst without spare capacity: a new buffer, prefix kept, dst untouched.
	dst := bytes.Clone(prefix)
	sealed, err := k.Seal(dst, plain)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(sealed, prefix) || len(sealed) != len(prefix)+len(plain)+Overhead {
		t.Fatalf("seal did not append: %q", sealed)
	}
	// dst with spare capacity is reused in place.
	big := make([]byte, len(prefix), 1024)
	copy(big, prefix)
	sealed2, err := k.Seal(big, plain)
	if err != nil {
		t.Fatal(err)
	}
	if &sealed2[0] != &big[0] {
		t.Error("seal did not reuse dst's capacity")
	}

	opened, err := k.Open([]byte("x"), sealed[len(prefix):])
	if err != nil {
		t.Fatal(err)
	}
	if string(opened) != "x"+string(plain) {
		t.Fatalf("open did not append: %q", opened)
	}
	buf := make([]byte, 2, 100)
	copy(buf, "ab")
	opened, err = k.Open(buf, sealed2[len(prefix):])
	if err != nil {
		t.Fatal(err)
	}
	if string(opened) != "ab"+string(plain) || &opened[0] != &buf[0] {
		t.Fatalf("open with capacity: %q", opened)
	}
}

// Open with dst = sealed[IVSize:IVSize] decrypts where the ciphertext
// lies; a sealed object whose tag fails is left exactly as it was.
func TestOpenInPlace(t *testing.T) {
	k := fixedKey(4)
	for _, n := range []int{0, 1, 16, 1000, 1 << 20} {
		plain := pseudoRandom(int64(n)+3, n)
		sealed, err := k.Seal(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		got, err := k.Open(sealed[IVSize:IVSize], sealed)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got, plain) || (n > 0 && &got[0] != &sealed[IVSize]) {
			t.Fatalf("%d bytes: in-place open gave the plaintext %v, in place %v", n, bytes.Equal(got, plain), n > 0 && &got[0] == &sealed[IVSize])
		}
	}
	sealed, err := k.Seal(nil, pseudoRandom(8, 500))
	if err != nil {
		t.Fatal(err)
	}
	sealed[IVSize+10] ^= 1
	before := bytes.Clone(sealed)
	if _, err := k.Open(sealed[IVSize:IVSize], sealed); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("tampered, in place: %v", err)
	}
	if !bytes.Equal(sealed, before) {
		t.Fatal("a failed in-place open changed the sealed bytes")
	}
}

func TestOpenTamper(t *testing.T) {
	k := fixedKey(1)
	plain := pseudoRandom(5, 100)
	sealed, err := k.Seal(nil, plain)
	if err != nil {
		t.Fatal(err)
	}
	mustFail := func(name string, buf []byte) {
		t.Helper()
		out, err := k.Open(nil, buf)
		if !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: got err %v", name, err)
		}
		if out != nil {
			t.Errorf("%s: returned %d bytes of plaintext with an error", name, len(out))
		}
	}
	for _, pos := range []struct {
		name string
		i    int
	}{{"iv first", 0}, {"iv last", IVSize - 1}, {"ciphertext first", IVSize}, {"ciphertext last", len(sealed) - MACSize - 1}, {"tag first", len(sealed) - MACSize}, {"tag last", len(sealed) - 1}} {
		for bit := 0; bit < 8; bit++ {
			c := bytes.Clone(sealed)
			c[pos.i] ^= 1 << bit
			mustFail(pos.name, c)
		}
	}
	mustFail("truncated by one", sealed[:len(sealed)-1])
	mustFail("first byte dropped", sealed[1:])
	mustFail("extended", append(bytes.Clone(sealed), 0))
	for _, n := range []int{0, 1, IVSize, Overhead - 1} {
		mustFail("too short", sealed[:n])
	}
	mustFail("nil", nil)

	other := fixedKey(2)
	if _, err := other.Open(nil, sealed); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("wrong key: got %v", err)
	}
	// Same encryption key, different MAC key: still rejected.
	mixed := *k
	mixed.MAC.R[0] ^= 0x10
	if _, err := mixed.Open(nil, sealed); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("wrong MAC key: got %v", err)
	}

	// A correctly tagged object with an all-zero IV is still rejected.
	zero := make([]byte, IVSize+len(plain)+MACSize)
	block, _ := aes.NewCipher(k.Encrypt[:])
	cipher.NewCTR(block, zero[:IVSize]).XORKeyStream(zero[IVSize:IVSize+len(plain)], plain)
	tag, err := k.MAC.sum(zero[:IVSize], zero[IVSize:IVSize+len(plain)])
	if err != nil {
		t.Fatal(err)
	}
	copy(zero[IVSize+len(plain):], tag[:])
	mustFail("all-zero IV", zero)
	// ... while the same construction with a non-zero IV opens, proving
	// the IV check (not the tag) rejected it.
	ok := make([]byte, len(zero))
	ok[0] = 1
	cipher.NewCTR(block, ok[:IVSize]).XORKeyStream(ok[IVSize:IVSize+len(plain)], plain)
	tag, _ = k.MAC.sum(ok[:IVSize], ok[IVSize:IVSize+len(plain)])
	copy(ok[IVSize+len(plain):], tag[:])
	if got, err := k.Open(nil, ok); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("hand-built object with non-zero IV: %v", err)
	}
}

func TestInvalidKeyRefused(t *testing.T) {
	for name, k := range map[string]*Key{
		"zero":         {},
		"zero encrypt": func() *Key { k := fixedKey(1); k.Encrypt = [32]byte{}; return k }(),
		"zero k":       func() *Key { k := fixedKey(1); k.MAC.K = [16]byte{}; return k }(),
		"zero r":       func() *Key { k := fixedKey(1); k.MAC.R = [16]byte{}; return k }(),
	} {
		if k.Valid() {
			t.Errorf("%s: Valid", name)
		}
		if _, err := k.Seal(nil, []byte("x")); err == nil {
			t.Errorf("%s: Seal succeeded", name)
		}
		if _, err := k.Open(nil, make([]byte, 40)); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
	if !fixedKey(1).Valid() {
		t.Error("fixed key not valid")
	}
}

func TestNewRandomKey(t *testing.T) {
	a, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	if !a.Valid() || !b.Valid() || *a == *b {
		t.Fatal("random keys invalid or equal")
	}
	if bytes.Equal(a.Encrypt[:16], a.MAC.K[:]) || a.MAC.K == a.MAC.R {
		t.Fatal("key parts repeat")
	}
}

func TestKeyFromBytes(t *testing.T) {
	b := make([]byte, 64)
	for i := range b {
		b[i] = byte(i + 1)
	}
	k, err := KeyFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.Encrypt[:], b[0:32]) || !bytes.Equal(k.MAC.K[:], b[32:48]) || !bytes.Equal(k.MAC.R[:], b[48:64]) {
		t.Fatalf("wrong layout: %+v", k)
	}
	for _, n := range []int{0, 32, 63, 65} {
		if _, err := KeyFromBytes(make([]byte, n)); err == nil {
			t.Errorf("%d bytes accepted", n)
		}
	}
}

func TestKeyJSON(t *testing.T) {
	k := fixedKey(0x11)
	buf, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	// Exact shape: standard base64 with padding, restic's field names.
	var want strings.Builder
	want.WriteString(`{"mac":{"k":`)
	kb, _ := json.Marshal(k.MAC.K[:])
	rb, _ := json.Marshal(k.MAC.R[:])
	eb, _ := json.Marshal(k.Encrypt[:])
	want.Write(kb)
	want.WriteString(`,"r":`)
	want.Write(rb)
	want.WriteString(`},"encrypt":`)
	want.Write(eb)
	want.WriteString(`}`)
	if string(buf) != want.String() {
		t.Fatalf("got  %s\nwant %s", buf, want.String())
	}
	if !strings.Contains(string(kb), "==") {
		t.Fatalf("16-byte base64 should be padded: %s", kb)
	}
	var back Key
	if err := json.Unmarshal(buf, &back); err != nil {
		t.Fatal(err)
	}
	if back != *k {
		t.Fatal("round trip differs")
	}

	// A key as restic writes it (field order differs from ours, extra
	// whitespace): must decode.
	restic := `{ "encrypt": "MD6Gh7HX2xhCG9xruFiMytrE1Z7oe4/3DETmNXkMr+8=", "mac": {"r": "zI1LlI7g6/4dQV3pIdEDUw==", "k": "702IJMuAsrzF+/+KmxKkLA=="} }`
	if err := json.Unmarshal([]byte(restic), &back); err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(back.Encrypt[:]) != "303e8687b1d7db18421bdc6bb8588ccadac4d59ee87b8ff70c44e635790cafef" ||
		hex.EncodeToString(back.MAC.K[:]) != "ef4d8824cb80b2bcc5fbff8a9b12a42c" ||
		hex.EncodeToString(back.MAC.R[:]) != "cc8d4b948ee0ebfe1d415de921d10353" {
		t.Fatalf("decoded wrong bytes: %+v", back)
	}

	b64 := func(n int) string {
		j, _ := json.Marshal(bytes.Repeat([]byte{0xab}, n))
		return string(j)
	}
	bad := map[string]string{
		"short k":        `{"mac":{"k":` + b64(15) + `,"r":` + b64(16) + `},"encrypt":` + b64(32) + `}`,
		"long k":         `{"mac":{"k":` + b64(17) + `,"r":` + b64(16) + `},"encrypt":` + b64(32) + `}`,
		"short r":        `{"mac":{"k":` + b64(16) + `,"r":` + b64(15) + `},"encrypt":` + b64(32) + `}`,
		"long r":         `{"mac":{"k":` + b64(16) + `,"r":` + b64(17) + `},"encrypt":` + b64(32) + `}`,
		"short encrypt":  `{"mac":{"k":` + b64(16) + `,"r":` + b64(16) + `},"encrypt":` + b64(31) + `}`,
		"long encrypt":   `{"mac":{"k":` + b64(16) + `,"r":` + b64(16) + `},"encrypt":` + b64(33) + `}`,
		"missing mac":    `{"encrypt":` + b64(32) + `}`,
		"missing crypt":  `{"mac":{"k":` + b64(16) + `,"r":` + b64(16) + `}}`,
		"empty object":   `{}`,
		"null":           `null`,
		"not base64":     `{"mac":{"k":"!!","r":` + b64(16) + `},"encrypt":` + b64(32) + `}`,
		"not json":       `{"mac":`,
		"zero encrypt":   `{"mac":{"k":` + b64(16) + `,"r":` + b64(16) + `},"encrypt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`,
		"wrong type":     `{"mac":{"k":1,"r":` + b64(16) + `},"encrypt":` + b64(32) + `}`,
		"array not obj":  `[]`,
		"string not obj": `"x"`,
	}
	for name, s := range bad {
		var k Key
		if err := json.Unmarshal([]byte(s), &k); err == nil {
			t.Errorf("%s: accepted %s", name, s)
		}
	}
}

func TestParamsValidate(t *testing.T) {
	good := []Params{
		{N: 2, R: 1, P: 1},
		{N: 1024, R: 8, P: 1},
		{N: 32768, R: 8, P: 9},
		{N: 1 << 20, R: 8, P: 1},
		{N: 1 << 22, R: 8, P: 1}, // exactly 4 GiB
	}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v rejected: %v", p, err)
		}
	}
	bad := []Params{
		{N: 0, R: 8, P: 1},
		{N: 1, R: 8, P: 1},
		{N: -2, R: 8, P: 1},
		{N: 3, R: 8, P: 1},
		{N: 1000, R: 8, P: 1},
		{N: 1<<15 + 2, R: 8, P: 1},
		{N: -1 << 62, R: 8, P: 1},
		{N: 1024, R: 0, P: 1},
		{N: 1024, R: 8, P: 0},
		{N: 1024, R: -1, P: 1},
		{N: 1024, R: 8, P: -1},
		{N: 1024, R: 1 << 15, P: 1 << 15},
		{N: 1 << 23, R: 8, P: 1},  // 8 GiB
		{N: 1 << 22, R: 16, P: 1}, // 8 GiB
		{N: 1 << 30, R: 1 << 20, P: 1},
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			// Do not go on to DeriveKey: it would really run scrypt
			// with these parameters.
			t.Errorf("%+v accepted", p)
			continue
		}
		if _, err := DeriveKey(p, []byte("salt"), "pw"); err == nil {
			t.Errorf("DeriveKey accepted %+v", p)
		}
	}
	// Whatever Validate says, DeriveKey must refuse these without
	// allocating (scrypt's own limits catch them today).
	for _, p := range validateOverflowCases {
		if _, err := DeriveKey(p, []byte("salt"), "pw"); err == nil {
			t.Errorf("DeriveKey accepted %+v", p)
		}
	}
}

// Parameters whose memory estimate 128*N*r overflows uint64 (so the 4 GiB
// check in Validate sees a small number).
var validateOverflowCases = []Params{
	{N: 1 << 62, R: 8, P: 1},       // 128*N*r = 2^72, wraps to 0
	{N: 1 << 40, R: 1 << 24, P: 1}, // 2^71, wraps to 0
}

// Validate is documented to refuse parameters needing more than 4 GiB, but
// its product 128*N*r can overflow, and the p*128*r bytes scrypt also
// allocates (its B buffer) are not bounded at all.
func TestParamsValidateKnownGaps(t *testing.T) {
	for _, p := range validateOverflowCases {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v accepted (memory estimate overflows)", p)
		}
	}
	// 128*r*p = 64 GiB for scrypt's B buffer (and p sequential smix runs).
	if p := (Params{N: 2, R: 1, P: 1 << 29}); p.Validate() == nil {
		t.Errorf("%+v accepted: scrypt would allocate 128*r*p = 64 GiB", p)
	}
}

func TestDeriveKey(t *testing.T) {
	p := Params{N: 1024, R: 8, P: 1}
	salt := pseudoRandom(11, SaltSize)
	a, err := DeriveKey(p, salt, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	b, err := DeriveKey(p, bytes.Clone(salt), "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if *a != *b || !a.Valid() {
		t.Fatal("not deterministic")
	}
	variants := map[string]func() (*Key, error){
		"password": func() (*Key, error) { return DeriveKey(p, salt, "correct horsE") },
		"salt":     func() (*Key, error) { s := bytes.Clone(salt); s[63] ^= 1; return DeriveKey(p, s, "correct horse") },
		"N":        func() (*Key, error) { return DeriveKey(Params{N: 2048, R: 8, P: 1}, salt, "correct horse") },
		"r":        func() (*Key, error) { return DeriveKey(Params{N: 1024, R: 4, P: 1}, salt, "correct horse") },
		"p":        func() (*Key, error) { return DeriveKey(Params{N: 1024, R: 8, P: 2}, salt, "correct horse") },
	}
	for name, f := range variants {
		c, err := f()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if *c == *a {
			t.Errorf("changing %s gives the same key", name)
		}
	}
	if _, err := DeriveKey(p, nil, "pw"); err == nil {
		t.Error("empty salt accepted")
	}
}

// RFC 7914 section 12, the N=1024 vector: scrypt's 64 bytes are split into
// the AES key, K and R in that order.
func TestDeriveKeyRFC7914(t *testing.T) {
	k, err := DeriveKey(Params{N: 1024, R: 8, P: 16}, []byte("NaCl"), "password")
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"+
		"2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640")
	var got []byte
	got = append(got, k.Encrypt[:]...)
	got = append(got, k.MAC.K[:]...)
	got = append(got, k.MAC.R[:]...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %x\nwant %x", got, want)
	}
}

func TestNewSalt(t *testing.T) {
	a, err := NewSalt()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSalt()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 64 || len(b) != 64 || bytes.Equal(a, b) {
		t.Fatalf("salts %x %x", a, b)
	}
}

func TestCalibrateFloor(t *testing.T) {
	if testing.Short() {
		t.Skip("runs one scrypt with N=2^15")
	}
	// No memory to spare and no time: the documented minimum.
	p := Calibrate(time.Nanosecond, 0)
	if p != (Params{N: 1 << 15, R: 8, P: 1}) {
		t.Fatalf("got %+v", p)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Verify accepts exactly what Open would return and compares it piece by
// piece: a difference in any piece, including the last byte of the last,
// a length that differs, and any tampering are refused, each with its own
// error.
func TestVerify(t *testing.T) {
	k := fixedKey(6)
	for _, n := range []int{0, 1, verifyPiece - 1, verifyPiece, verifyPiece + 1, 3*verifyPiece + 17} {
		plain := pseudoRandom(int64(n)+11, n)
		sealed, err := k.Seal(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.Verify(sealed, plain); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		for _, at := range []int{0, n / 2, n - 1} {
			if n == 0 {
				break
			}
			other := bytes.Clone(plain)
			other[at] ^= 0x80
			if err := k.Verify(sealed, other); !errors.Is(err, ErrMismatch) {
				t.Fatalf("%d bytes, expected plaintext differing at %d: %v", n, at, err)
			}
		}
		if err := k.Verify(sealed, append(bytes.Clone(plain), 0)); !errors.Is(err, ErrMismatch) {
			t.Fatalf("%d bytes, one byte more expected: %v", n, err)
		}
		for _, at := range []int{0, IVSize, len(sealed) - 1} {
			bad := bytes.Clone(sealed)
			bad[at] ^= 1
			if err := k.Verify(bad, plain); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("%d bytes, sealed byte %d flipped: %v", n, at, err)
			}
		}
	}
	if err := k.Verify(make([]byte, Overhead-1), nil); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("short object: %v", err)
	}
	if err := fixedKey(7).Verify(mustSeal(t, k, []byte("x")), []byte("x")); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("another key: %v", err)
	}
}

func mustSeal(t *testing.T, k *Key, plain []byte) []byte {
	t.Helper()
	sealed, err := k.Seal(nil, plain)
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}
