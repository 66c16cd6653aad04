package chunker

import "math/bits"

// The cut rule restic's repositories are written with (the same bytes must
// give the same blobs whichever tool wrote them): a chunk of length L ends
// at the first L >= MinSize where the Rabin fingerprint of its last
// windowSize bytes, modulo the repository's polynomial, has its low
// averageBits bits all zero; at MaxSize when there is none; and at the end
// of the stream. The fingerprint of a window depends on the window's bytes
// alone, so bytes before MinSize-windowSize in a chunk are never hashed.
const (
	windowSize  = 64
	averageBits = 20
	splitMask   = 1<<averageBits - 1
)

// tables hold the two per-polynomial lookups of the rolling fingerprint:
// mod[i] reduces the eight bits that one byte's shift pushes past the
// polynomial's degree, out[b] is byte b's weight once it is windowSize-1
// bytes old, which is removed as it leaves the window.
type tables struct {
	out, mod [256]uint64
	shift    uint // degree - 8: where the bits mod[] reduces sit before the shift
}

// newTables returns the tables of pol, or nil when its degree leaves no
// room for a byte above it in 64 bits (restic uses degree 53).
func newTables(pol Pol) *tables {
	p := uint64(pol)
	k := bits.Len64(p) - 1
	if k < 9 || k > 56 {
		return nil
	}
	t := &tables{shift: uint(k - 8)}
	for b := range 256 {
		v := uint64(b)
		for range windowSize - 1 {
			v = polyMod(v<<8, p)
		}
		t.out[b] = v
		// The reduction of b·x^k, with b·x^k itself XORed in so that one
		// XOR both clears the shifted-out bits and adds their remainder.
		t.mod[b] = polyMod(uint64(b)<<k, p) | uint64(b)<<k
	}
	return t
}

// polyMod is x modulo p, both polynomials over GF(2) as bit sets.
func polyMod(x, p uint64) uint64 {
	dp := bits.Len64(p)
	for {
		dx := bits.Len64(x)
		if dx < dp {
			return x
		}
		x ^= p << (dx - dp)
	}
}

// scanState is how far scan got into a chunk that has no cut yet.
type scanState struct {
	pos    int    // bytes of the chunk looked at
	digest uint64 // fingerprint after data[pos-1]
}

// scan looks for the cut in data, the chunk's bytes so far, continuing
// from s, and returns the chunk's length if it found one. It never cuts
// for MaxSize: the caller never holds more than MaxSize bytes.
func (t *tables) scan(data []byte, s *scanState) (int, bool) {
	i, d := s.pos, s.digest
	if i < MinSize-windowSize {
		i = MinSize - windowSize
	}
	// The first windowSize-1 hashed bytes fill the window: nothing leaves
	// it yet and no cut is allowed before MinSize.
	for ; i < MinSize-1 && i < len(data); i++ {
		d = t.push(d, data[i])
	}
	if i == MinSize-1 && i < len(data) {
		d = t.push(d, data[i])
		i++
		if d&splitMask == 0 {
			*s = scanState{pos: i, digest: d}
			return i, true
		}
	}
	if i >= MinSize && i < len(data) {
		var cut int
		if cut, d = t.find(data, i, d); cut > 0 {
			*s = scanState{pos: cut}
			return cut, true
		}
		i = len(data)
	}
	*s = scanState{pos: i, digest: d}
	return 0, false
}

// push shifts byte b into fingerprint d.
func (t *tables) push(d uint64, b byte) uint64 {
	return (d<<8 | uint64(b)) ^ t.mod[byte(d>>t.shift)]
}

// lanes is how many stretches of the data find fingerprints at once. Each
// byte's fingerprint waits for the previous one (a table load and a few
// operations), so a single stretch leaves most of a core idle; four
// independent ones, interleaved, keep it busy. A stretch needs no earlier
// state than its first windowSize bytes, because the fingerprint of a full
// window depends on the window alone.
const lanes = 4

// minLane is the shortest stretch worth the windowSize bytes of warm-up
// each extra lane costs.
const minLane = 8 << 10

// find returns the first position p in (i, len(data)] where the
// fingerprint of data[p-windowSize:p] is a cut point, d being the
// fingerprint of data[i-windowSize:i] (i >= windowSize), or 0 and the
// fingerprint at the end when there is none.
func (t *tables) find(data []byte, i int, d uint64) (int, uint64) {
	if l := (len(data) - i) / lanes; l >= minLane {
		if cut, ok := t.findLanes(data, i, l, d); ok {
			return cut, 0
		}
		// No cut in the lanes: the last lane's fingerprint carries on.
		i += lanes * l
		d = t.warm(data[i-windowSize : i])
	}
	out, mod, shift := &t.out, &t.mod, t.shift
	in := data[i:]
	win := data[i-windowSize : len(data)-windowSize]
	win = win[:len(in)]
	for j, b := range in {
		d ^= out[win[j]]
		d = (d<<8 | uint64(b)) ^ mod[byte(d>>shift)]
		if d&splitMask == 0 {
			return i + j + 1, d
		}
	}
	return 0, d
}

// warm is the fingerprint of one full window.
func (t *tables) warm(w []byte) uint64 {
	var d uint64
	for _, b := range w {
		d = t.push(d, b)
	}
	return d
}

// findLanes looks for the first cut in data[i:i+lanes*l] with lanes
// stretches of l bytes hashed side by side. A cut in the first stretch is
// the answer at once; one in a later stretch is kept until the earlier
// stretches are done, since the first cut point in stream order is the
// cut.
func (t *tables) findLanes(data []byte, i, l int, d0 uint64) (int, bool) {
	s1, s2, s3 := i+l, i+2*l, i+3*l
	d1 := t.warm(data[s1-windowSize : s1])
	d2 := t.warm(data[s2-windowSize : s2])
	d3 := t.warm(data[s3-windowSize : s3])
	in0, in1, in2, in3 := data[i:s1], data[s1:s2], data[s2:s3], data[s3:s3+l]
	w0, w1 := data[i-windowSize:s1-windowSize], data[s1-windowSize:s2-windowSize]
	w2, w3 := data[s2-windowSize:s3-windowSize], data[s3-windowSize:s3+l-windowSize]
	out, mod, shift := &t.out, &t.mod, t.shift
	first := [lanes]int{-1, -1, -1, -1}
	for j := 0; j < l; j++ {
		d0 ^= out[w0[j]]
		d1 ^= out[w1[j]]
		d2 ^= out[w2[j]]
		d3 ^= out[w3[j]]
		d0 = (d0<<8 | uint64(in0[j])) ^ mod[byte(d0>>shift)]
		d1 = (d1<<8 | uint64(in1[j])) ^ mod[byte(d1>>shift)]
		d2 = (d2<<8 | uint64(in2[j])) ^ mod[byte(d2>>shift)]
		d3 = (d3<<8 | uint64(in3[j])) ^ mod[byte(d3>>shift)]
		if d0&splitMask == 0 || d1&splitMask == 0 || d2&splitMask == 0 || d3&splitMask == 0 {
			if d0&splitMask == 0 {
				return i + j + 1, true
			}
			for k, dk := range [lanes]uint64{0, d1, d2, d3} {
				if k > 0 && dk&splitMask == 0 && first[k] < 0 {
					first[k] = i + k*l + j + 1
				}
			}
		}
	}
	for _, p := range first[1:] {
		if p >= 0 {
			return p, true
		}
	}
	return 0, false
}
