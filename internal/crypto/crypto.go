// Package crypto implements restic's authenticated encryption: AES-256 in
// counter mode with a random 16-byte IV, authenticated by Poly1305-AES over
// the ciphertext, and the scrypt key derivation that protects the master key.
package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"

	// restic's format is Poly1305-AES: a MAC keyed per message, built here
	// as the format needs; the package is deprecated for other uses.
	"golang.org/x/crypto/poly1305" //nolint:staticcheck // SA1019, see above
)

const (
	// IVSize is the length of the random IV that starts every sealed object.
	IVSize = aes.BlockSize
	// MACSize is the length of the Poly1305 tag that ends it.
	MACSize = poly1305.TagSize
	// Overhead is what sealing adds to a plaintext.
	Overhead = IVSize + MACSize
)

// ErrUnauthenticated means the tag did not verify: the data was changed,
// truncated, or sealed with another key.
var ErrUnauthenticated = errors.New("ciphertext verification failed")

// MACKey is the Poly1305-AES key: K encrypts the IV with AES-128 to give the
// per-message part, R is the Poly1305 multiplier. R is stored unclamped;
// golang.org/x/crypto/poly1305 clamps it, as restic relies on.
type MACKey struct {
	K [16]byte
	R [16]byte
}

// Key is a repository master key (or a key derived from a password).
type Key struct {
	MAC     MACKey
	Encrypt [32]byte
}

// NewRandomKey returns a key from the system's random source.
func NewRandomKey() (*Key, error) {
	k := &Key{}
	for _, b := range [][]byte{k.Encrypt[:], k.MAC.K[:], k.MAC.R[:]} {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("read random key material: %w", err)
		}
	}
	return k, nil
}

// KeyFromBytes builds a key from 64 bytes laid out as scrypt's output is
// used: AES key [0:32], MAC K [32:48], MAC R [48:64].
func KeyFromBytes(b []byte) (*Key, error) {
	if len(b) != 64 {
		return nil, fmt.Errorf("key material has %d bytes, want 64", len(b))
	}
	k := &Key{}
	copy(k.Encrypt[:], b[0:32])
	copy(k.MAC.K[:], b[32:48])
	copy(k.MAC.R[:], b[48:64])
	return k, nil
}

// Valid reports whether no part of the key is all zero.
func (k *Key) Valid() bool {
	return !allZero(k.Encrypt[:]) && !allZero(k.MAC.K[:]) && !allZero(k.MAC.R[:])
}

func allZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}

// Seal encrypts plaintext and appends IV, ciphertext and tag to dst.
// plaintext and dst may not overlap.
func (k *Key) Seal(dst, plaintext []byte) ([]byte, error) {
	if !k.Valid() {
		return nil, errors.New("seal: invalid key")
	}
	total := len(dst) + len(plaintext) + Overhead
	var out []byte
	if cap(dst) >= total {
		out = dst[:total]
	} else {
		out = make([]byte, total, total+total/8)
		copy(out, dst)
	}
	iv := out[len(dst) : len(dst)+IVSize]
	for {
		if _, err := rand.Read(iv); err != nil {
			return nil, fmt.Errorf("seal: read random IV: %w", err)
		}
		if !allZero(iv) {
			break
		}
	}
	ct := out[len(dst)+IVSize : total-MACSize]
	block, err := aes.NewCipher(k.Encrypt[:])
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	cipher.NewCTR(block, iv).XORKeyStream(ct, plaintext)
	tag, err := k.MAC.sum(iv, ct)
	if err != nil {
		return nil, err
	}
	copy(out[total-MACSize:], tag[:])
	return out, nil
}

// Open verifies and decrypts a sealed object and appends the plaintext to
// dst. It never returns plaintext whose tag did not verify. dst must not
// overlap sealed, except as sealed[IVSize:IVSize]: that decrypts in place
// (CTR mode allows an exact overlap), and the tag is checked before any
// byte is changed.
func (k *Key) Open(dst, sealed []byte) ([]byte, error) {
	if !k.Valid() {
		return nil, errors.New("open: invalid key")
	}
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: sealed object has %d bytes, shorter than the %d-byte IV and tag", ErrUnauthenticated, len(sealed), Overhead)
	}
	iv := sealed[:IVSize]
	if allZero(iv) {
		return nil, fmt.Errorf("%w: all-zero IV", ErrUnauthenticated)
	}
	ct := sealed[IVSize : len(sealed)-MACSize]
	want, err := k.MAC.sum(iv, ct)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(want[:], sealed[len(sealed)-MACSize:]) != 1 {
		return nil, ErrUnauthenticated
	}
	total := len(dst) + len(ct)
	var out []byte
	if cap(dst) >= total {
		out = dst[:total]
	} else {
		out = make([]byte, total)
		copy(out, dst)
	}
	block, err := aes.NewCipher(k.Encrypt[:])
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	cipher.NewCTR(block, iv).XORKeyStream(out[len(dst):], ct)
	return out, nil
}

// ErrMismatch means a sealed object verified but holds other plaintext
// than the caller expected.
var ErrMismatch = errors.New("sealed object does not decrypt to the expected plaintext")

// verifyPiece is how much plaintext Verify decrypts at a time.
const verifyPiece = 32 << 10

// Verify checks that sealed authenticates under k and decrypts to want,
// without a buffer of the plaintext's size: the ciphertext is decrypted a
// piece at a time into a small one and compared as it goes. A backup
// checks every blob it seals this way before storing it, and a buffer per
// blob for that check alone was a tenth of its live heap.
func (k *Key) Verify(sealed, want []byte) error {
	if !k.Valid() {
		return errors.New("verify: invalid key")
	}
	if len(sealed) < Overhead {
		return fmt.Errorf("%w: sealed object has %d bytes, shorter than the %d-byte IV and tag", ErrUnauthenticated, len(sealed), Overhead)
	}
	iv := sealed[:IVSize]
	ct := sealed[IVSize : len(sealed)-MACSize]
	tag, err := k.MAC.sum(iv, ct)
	if err != nil {
		return err
	}
	if allZero(iv) || subtle.ConstantTimeCompare(tag[:], sealed[len(sealed)-MACSize:]) != 1 {
		return ErrUnauthenticated
	}
	if len(ct) != len(want) {
		return fmt.Errorf("%w: %d bytes, want %d", ErrMismatch, len(ct), len(want))
	}
	block, err := aes.NewCipher(k.Encrypt[:])
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	stream := cipher.NewCTR(block, iv)
	var piece [verifyPiece]byte
	for off := 0; off < len(ct); off += verifyPiece {
		n := min(verifyPiece, len(ct)-off)
		stream.XORKeyStream(piece[:n], ct[off:off+n])
		if !bytes.Equal(piece[:n], want[off:off+n]) {
			return fmt.Errorf("%w: first difference within bytes %d to %d", ErrMismatch, off, off+n)
		}
	}
	return nil
}

// sum computes Poly1305 over msg keyed with R followed by AES-128_K(iv).
func (m *MACKey) sum(iv, msg []byte) ([16]byte, error) {
	var key [32]byte
	block, err := aes.NewCipher(m.K[:])
	if err != nil {
		return [16]byte{}, fmt.Errorf("mac: %w", err)
	}
	copy(key[:16], m.R[:])
	block.Encrypt(key[16:], iv)
	var tag [16]byte
	poly1305.Sum(&tag, msg, &key)
	return tag, nil
}

// keyJSON is the master key as stored (sealed) in a key file.
type keyJSON struct {
	MAC struct {
		K []byte `json:"k"`
		R []byte `json:"r"`
	} `json:"mac"`
	Encrypt []byte `json:"encrypt"`
}

// MarshalJSON encodes the key as {"mac":{"k":…,"r":…},"encrypt":…}.
func (k *Key) MarshalJSON() ([]byte, error) {
	var j keyJSON
	j.MAC.K = k.MAC.K[:]
	j.MAC.R = k.MAC.R[:]
	j.Encrypt = k.Encrypt[:]
	return json.Marshal(j)
}

// UnmarshalJSON decodes and length-checks a stored master key.
func (k *Key) UnmarshalJSON(data []byte) error {
	var j keyJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("decode master key: %w", err)
	}
	if len(j.MAC.K) != 16 || len(j.MAC.R) != 16 || len(j.Encrypt) != 32 {
		return fmt.Errorf("decode master key: wrong lengths (k %d, r %d, encrypt %d)", len(j.MAC.K), len(j.MAC.R), len(j.Encrypt))
	}
	copy(k.MAC.K[:], j.MAC.K)
	copy(k.MAC.R[:], j.MAC.R)
	copy(k.Encrypt[:], j.Encrypt)
	if !k.Valid() {
		return errors.New("decode master key: a key part is all zero")
	}
	return nil
}
