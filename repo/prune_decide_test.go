package repo

import (
	"math"
	"slices"
	"testing"
)

// TestDecidePacks tables prune's decision (decidePacks, a pure function):
// which packs are kept, rewritten or removed for given usage and
// --max-unused, as restic decides.
func TestDecidePacks(t *testing.T) {
	// pack n: used and unused bytes, used blobs of blobs, tree/data.
	type pk struct {
		n              byte
		used, unused   uint64
		usedBlobs, all int
		tree, data     bool
	}
	maxUnused := func(s string) func(uint64) uint64 {
		f, err := maxUnusedFunc(s)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name                 string
		packs                []pk
		maxUnused            func(uint64) uint64
		keep, repack, remove []byte
		remaining            uint64
	}{
		{"unused pack removed, used kept", []pk{{1, 1000, 0, 10, 10, false, true}, {2, 0, 500, 0, 5, false, true}},
			maxUnused("5%"), []byte{1}, nil, []byte{2}, 0},
		{"mixed tree and data always rewritten", []pk{{1, 1000, 0, 10, 10, true, true}},
			maxUnused("5%"), nil, []byte{1}, nil, 0},
		{"tree pack with unused space rewritten even under the limit", []pk{{1, 10000, 0, 10, 10, false, true}, {2, 100, 10, 1, 2, true, false}},
			maxUnused("5%"), []byte{1}, []byte{2}, nil, 0},
		{"data packs within 5% kept", []pk{{1, 10000, 100, 10, 11, false, true}, {2, 10000, 200, 10, 11, false, true}},
			maxUnused("5%"), []byte{1, 2}, nil, nil, 300},
		{"over 5%: the highest share of unused first, until within", []pk{
			{1, 1000, 100, 10, 11, false, true}, // 9% unused share
			{2, 1000, 900, 10, 19, false, true}, // 47%
			{3, 1000, 300, 10, 13, false, true}, // 23%
		}, // used 3000: 5% allows 157 unused; 1300 - 900 - 300 = 100 left
			maxUnused("5%"), []byte{1}, []byte{2, 3}, nil, 100},
		{"0% rewrites every pack with unused space", []pk{{1, 1000, 1, 10, 11, false, true}, {2, 1000, 0, 10, 10, false, true}},
			maxUnused("0%"), []byte{2}, []byte{1}, nil, 0},
		{"unlimited keeps every data pack with used blobs", []pk{{1, 10, 1000, 1, 100, false, true}, {2, 0, 50, 0, 3, false, true}},
			maxUnused("unlimited"), []byte{1}, nil, []byte{2}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stats := &PruneStats{}
			var usages []*packUsage
			for _, p := range tc.packs {
				u := &packUsage{id: ID{p.n}, blobs: make([]Blob, p.all), used: p.used, unused: p.unused,
					usedBlobs: p.usedBlobs, hasTree: p.tree, hasData: p.data, storedSize: int64(p.used + p.unused)}
				stats.UsedSize += p.used
				stats.UnusedSize += p.unused
				usages = append(usages, u)
			}
			keep, repack, remove, remaining := decidePacks(usages, tc.maxUnused, stats)
			ids := func(us []*packUsage) []byte {
				var out []byte
				for _, u := range us {
					out = append(out, u.id[0])
				}
				slices.Sort(out)
				return out
			}
			if got := ids(keep); !slices.Equal(got, tc.keep) {
				t.Errorf("keep %v, want %v", got, tc.keep)
			}
			if got := ids(repack); !slices.Equal(got, tc.repack) {
				t.Errorf("repack %v, want %v", got, tc.repack)
			}
			if got := ids(remove); !slices.Equal(got, tc.remove) {
				t.Errorf("remove %v, want %v", got, tc.remove)
			}
			if remaining != tc.remaining {
				t.Errorf("remaining unused %d, want %d", remaining, tc.remaining)
			}
			// What is rewritten or removed is counted.
			var repackSize, removeSize uint64
			for _, u := range repack {
				repackSize += u.used
				removeSize += u.unused
			}
			for _, u := range remove {
				removeSize += uint64(u.storedSize)
			}
			if stats.RepackSize != repackSize || stats.RemoveSize != removeSize {
				t.Errorf("stats repack %d remove %d, want %d and %d", stats.RepackSize, stats.RemoveSize, repackSize, removeSize)
			}
			if tc.maxUnused(0) == math.MaxUint64 && stats.MaxUnusedBytesAllowed != math.MaxUint64 {
				t.Errorf("unlimited: allowed %d", stats.MaxUnusedBytesAllowed)
			}
		})
	}
}

// TestMaxUnused: --max-unused as restic reads it, sizes through the one
// byte-size parser check's --read-data-subset uses too.
func TestMaxUnused(t *testing.T) {
	for _, tc := range []struct {
		in   string
		used uint64
		want uint64
	}{
		{"", 95, 5}, {"5%", 95, 5}, {"0%", 1000, 0}, {"50%", 1000, 1000},
		{"unlimited", 1, math.MaxUint64},
		{"500M", 1, 500 << 20}, {"1g", 1, 1 << 30}, {"2048", 7, 2048}, {"10b", 7, 10},
	} {
		f, err := maxUnusedFunc(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := f(tc.used); got != tc.want {
			t.Errorf("%q of %d used: %d, want %d", tc.in, tc.used, got, tc.want)
		}
	}
	for _, bad := range []string{"-1", "abc", "100%", "-5%", "5x", "99999999999T"} {
		if _, err := maxUnusedFunc(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
