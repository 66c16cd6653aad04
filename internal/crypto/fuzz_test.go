package crypto

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to Open (and to Key.UnmarshalJSON): they
// must never panic, must fail with ErrUnauthenticated, and whatever Seal
// produces for the same input must open again. Verify must agree with
// Open on every input.
func FuzzOpen(f *testing.F) {
	k := fixedKey(0x5a)
	for _, p := range [][]byte{nil, {0}, []byte("hello"), bytes.Repeat([]byte{0xff}, 100)} {
		s, err := k.Seal(nil, p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add(make([]byte, Overhead))
	f.Add(make([]byte, Overhead+1))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := k.Open(nil, data)
		if err == nil {
			// Only a real seal opens; a fuzzer cannot forge a tag, but
			// the seeds are valid, so re-sealing must round-trip.
			if len(out) != len(data)-Overhead {
				t.Fatalf("opened %d bytes from %d", len(out), len(data))
			}
		} else if !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("error does not wrap ErrUnauthenticated: %v", err)
		}
		if verr := k.Verify(data, out); (verr == nil) != (err == nil) {
			t.Fatalf("Verify %v where Open %v", verr, err)
		}
		s, err := k.Seal(nil, data)
		if err != nil {
			t.Fatal(err)
		}
		back, err := k.Open([]byte{1}, s)
		if err != nil || !bytes.Equal(back[1:], data) || back[0] != 1 {
			t.Fatalf("seal/open round trip failed: %v", err)
		}
		if err := k.Verify(s, data); err != nil {
			t.Fatalf("Verify of a fresh seal: %v", err)
		}
		var key Key
		if json.Unmarshal(data, &key) == nil && !key.Valid() {
			t.Fatal("UnmarshalJSON accepted an invalid key")
		}
	})
}
