package repo

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/internal/crypto"
)

// A blob is stored only if its sealed bytes open to the chunk: a fault that
// made the cipher or the compressor produce other bytes than the ones the
// tag covers or the chunk holds is refused, compressed or not. The faults
// are made by sealing other bytes than the ones the check expects, as a
// memory fault between the stages would.
func TestVerifySealedRefusesFaults(t *testing.T) {
	r, _ := newTestRepo(t, 2, Options{})
	data := mixedData(9, 3<<20)
	flipped := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0x10
		return c
	}
	seal := func(plain []byte) []byte {
		s, err := r.key.Seal(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	compressed := r.enc.EncodeAll(data, nil)
	if len(compressed) >= len(data) {
		t.Fatalf("test data did not compress: %d of %d bytes", len(compressed), len(data))
	}
	if err := r.verifySealed(seal(compressed), compressed, true, data); err != nil {
		t.Fatalf("sound compressed blob: %v", err)
	}
	if err := r.verifySealed(seal(data), data, false, data); err != nil {
		t.Fatalf("sound uncompressed blob: %v", err)
	}
	// The cipher's output is not the bytes that were to be sealed.
	for _, at := range []int{0, len(compressed) / 2, len(compressed) - 1} {
		err := r.verifySealed(seal(flipped(compressed, at)), compressed, true, data)
		if !errors.Is(err, crypto.ErrMismatch) {
			t.Fatalf("compressed bytes sealed with byte %d changed: %v", at, err)
		}
	}
	if err := r.verifySealed(seal(flipped(data, len(data)-1)), data, false, data); !errors.Is(err, crypto.ErrMismatch) {
		t.Fatalf("uncompressed, last byte changed before sealing: %v", err)
	}
	// The sealed bytes changed after sealing.
	bad := seal(compressed)
	bad[len(bad)/2] ^= 1
	if err := r.verifySealed(bad, compressed, true, data); !errors.Is(err, crypto.ErrUnauthenticated) {
		t.Fatalf("sealed bytes changed after sealing: %v", err)
	}
	// The compressor's output does not decompress to the chunk.
	other := r.enc.EncodeAll(flipped(data, len(data)/3), nil)
	if err := r.verifySealed(seal(other), other, true, data); err == nil || !strings.Contains(err.Error(), "do not read back") {
		t.Fatalf("compressed output of other bytes: %v", err)
	}
	if err := r.verifySealed(seal(compressed[:len(compressed)-1]), compressed[:len(compressed)-1], true, data); err == nil || !strings.Contains(err.Error(), "decompress") {
		t.Fatalf("truncated compressed output: %v", err)
	}
}
