package chunker

import (
	"math/rand/v2"
	"testing"
)

// find (four stretches side by side) must return the first cut point in
// stream order, as a byte-by-byte scan does, wherever the candidates fall
// among the stretches. Zero windows are cut points for every polynomial,
// so strewn zero runs put several candidates into most scans.
func TestFindMatchesSerialScan(t *testing.T) {
	tab := newTables(0x3DA3358B4DC173)
	r := rand.New(rand.NewPCG(5, 6))
	data := make([]byte, 2<<20)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for p := 1000; p+64 <= len(data); p += 2000 + r.IntN(60000) {
		clear(data[p : p+64])
	}
	serial := func(data []byte, i int) (int, uint64) {
		d := tab.warm(data[i-windowSize : i])
		for p := i; p < len(data); p++ {
			d = tab.push(d^tab.out[data[p-windowSize]], data[p])
			if d&splitMask == 0 {
				return p + 1, d
			}
		}
		return 0, d
	}
	inLater := 0
	for trial := 0; trial < 3000; trial++ {
		i := windowSize + r.IntN(len(data)/2)
		end := min(len(data), i+r.IntN(400<<10))
		want, wd := serial(data[:end], i)
		got, gd := tab.find(data[:end], i, tab.warm(data[i-windowSize:i]))
		if got != want || (want == 0 && gd != wd) {
			t.Fatalf("data[%d:%d]: cut %d (digest %x), serial scan %d (digest %x)", i, end, got, gd, want, wd)
		}
		if l := (end - i) / lanes; l >= minLane && want > i+l {
			inLater++
		}
	}
	if inLater < 100 {
		t.Fatalf("only %d trials had their cut beyond the first stretch", inLater)
	}
	t.Logf("%d of 3000 trials cut beyond the first stretch", inLater)
}
