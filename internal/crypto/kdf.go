package crypto

import (
	"crypto/rand"
	"fmt"
	"time"

	"golang.org/x/crypto/scrypt"
)

// SaltSize is the length of the random salt stored in each key file.
const SaltSize = 64

// Params are scrypt's cost parameters as a key file stores them.
type Params struct {
	N int
	R int
	P int
}

// Validate rejects parameters scrypt cannot use or that would take
// unreasonable memory; key files come from storage and are not trusted.
func (p Params) Validate() error {
	if p.N <= 1 || p.N&(p.N-1) != 0 {
		return fmt.Errorf("scrypt N=%d is not a power of two greater than 1", p.N)
	}
	if p.R <= 0 || p.P <= 0 || p.N > 1<<30 || p.R > 1<<20 || p.P > 1<<20 {
		return fmt.Errorf("scrypt N=%d r=%d p=%d out of range", p.N, p.R, p.P)
	}
	// scrypt needs 128*r*N bytes plus 128*r*p; refuse more than 4 GiB for
	// either, and more than 2^32 block mixes of work, so a damaged key file
	// cannot hang or exhaust the machine. All factors are bounded above, so
	// no product overflows.
	r, n, pp := uint64(p.R), uint64(p.N), uint64(p.P)
	if 128*r*n > 4<<30 || 128*r*pp > 4<<30 {
		return fmt.Errorf("scrypt N=%d r=%d p=%d needs more than 4 GiB of memory", p.N, p.R, p.P)
	}
	if n*r*pp > 1<<32 {
		return fmt.Errorf("scrypt N=%d r=%d p=%d is too much work", p.N, p.R, p.P)
	}
	return nil
}

// DeriveKey stretches password with salt into a key.
func DeriveKey(p Params, salt []byte, password string) (*Key, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(salt) == 0 {
		return nil, fmt.Errorf("scrypt: empty salt")
	}
	b, err := scrypt.Key([]byte(password), salt, p.N, p.R, p.P, 64)
	if err != nil {
		return nil, fmt.Errorf("scrypt: %w", err)
	}
	return KeyFromBytes(b)
}

// NewSalt returns SaltSize random bytes.
func NewSalt() ([]byte, error) {
	s := make([]byte, SaltSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("read random salt: %w", err)
	}
	return s, nil
}

// Calibrate picks parameters that take about target on this machine while
// using at most maxMemory bytes: N as large as the memory allows (up to
// 2^20) with r=8, then p raised until one derivation takes target. A weak
// machine still gets at least N=2^15, r=8, p=1.
func Calibrate(target time.Duration, maxMemory int) Params {
	p := Params{N: 1 << 15, R: 8, P: 1}
	for p.N < 1<<20 && 128*(p.N*2)*p.R <= maxMemory {
		p.N *= 2
	}
	salt := make([]byte, SaltSize)
	start := time.Now()
	if _, err := scrypt.Key([]byte("calibration"), salt, p.N, p.R, 1, 64); err != nil {
		return p
	}
	one := time.Since(start)
	if one <= 0 {
		return p
	}
	n := int(target / one)
	if n > 1 {
		p.P = n
	}
	if p.P > 64 {
		p.P = 64
	}
	return p
}
