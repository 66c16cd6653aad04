package backendtest

import (
	"errors"
	"io"
	"math/rand/v2"
)

// ErrSourceFailed is what FailingSource returns once its good bytes are used up.
var ErrSourceFailed = errors.New("backendtest: source failed on purpose")

// FailingSource is a Source that yields the first Good bytes of Data and
// then fails with ErrSourceFailed; its Length is len(Data).
type FailingSource struct {
	Data []byte
	Good int
	// Digest is what SHA256 reports (nil: not known), for the backends
	// that send a known digest with the data.
	Digest []byte
	pos    int
}

// Read implements io.Reader.
func (s *FailingSource) Read(p []byte) (int, error) {
	if s.pos >= s.Good {
		return 0, ErrSourceFailed
	}
	n := copy(p, s.Data[s.pos:s.Good])
	s.pos += n
	return n, nil
}

// Rewind implements backend.Source.
func (s *FailingSource) Rewind() error { s.pos = 0; return nil }

// Length implements backend.Source.
func (s *FailingSource) Length() int64 { return int64(len(s.Data)) }

// MD5 implements backend.Source; it does not know one.
func (s *FailingSource) MD5() []byte { return nil }

// SHA256 implements backend.Source: Digest.
func (s *FailingSource) SHA256() []byte { return s.Digest }

// LyingSource yields Data but reports Claimed as its length.
type LyingSource struct {
	Data    []byte
	Claimed int64
	// Digest is what SHA256 reports (nil: not known).
	Digest []byte
	pos    int
}

// Read implements io.Reader.
func (s *LyingSource) Read(p []byte) (int, error) {
	if s.pos >= len(s.Data) {
		return 0, io.EOF
	}
	n := copy(p, s.Data[s.pos:])
	s.pos += n
	return n, nil
}

// Rewind implements backend.Source.
func (s *LyingSource) Rewind() error { s.pos = 0; return nil }

// Length implements backend.Source.
func (s *LyingSource) Length() int64 { return s.Claimed }

// MD5 implements backend.Source; it does not know one.
func (s *LyingSource) MD5() []byte { return nil }

// SHA256 implements backend.Source: Digest.
func (s *LyingSource) SHA256() []byte { return s.Digest }

// GenSource is a Source of Size pseudo-random bytes generated on the fly from
// Seed, so large files can be saved without holding them in memory.
type GenSource struct {
	Size int64
	Seed [32]byte

	rng *rand.ChaCha8
	pos int64
	// AfterRead, if set, is called after every Read with the position reached.
	AfterRead func(pos int64)
}

// Read implements io.Reader.
func (s *GenSource) Read(p []byte) (int, error) {
	if s.rng == nil {
		s.rng = rand.NewChaCha8(s.Seed)
	}
	if s.pos >= s.Size {
		return 0, io.EOF
	}
	if rest := s.Size - s.pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, _ := s.rng.Read(p)
	s.pos += int64(n)
	if s.AfterRead != nil {
		s.AfterRead(s.pos)
	}
	return n, nil
}

// Rewind implements backend.Source.
func (s *GenSource) Rewind() error {
	s.rng = nil
	s.pos = 0
	return nil
}

// Length implements backend.Source.
func (s *GenSource) Length() int64 { return s.Size }

// MD5 implements backend.Source; it does not know one.
func (s *GenSource) MD5() []byte { return nil }

// SHA256 implements backend.Source; it does not know one.
func (s *GenSource) SHA256() []byte { return nil }
