// Package bench holds the benchmark input generator shared by `make bench`
// (the side-by-side table against restic, in bench_test.go) and the
// per-stage Go benchmarks of chunker/ and repo/.
//
// The generator depends on the standard library only, so any package's
// tests may import it without an import cycle.
package bench

import (
	"io"
	"math/rand/v2"
	"strconv"
)

// DefaultSeed is the seed `make bench` uses unless SCALR_BENCH_SEED says
// otherwise.
const DefaultSeed = 20240601

// Stream returns a deterministic, dump-like byte stream of exactly size
// bytes: the same (seed, size) always gives the same bytes, and a shorter
// stream is a prefix of a longer one with the same seed.
//
// The stream alternates two kinds of segment, each pair of equal length L
// (L drawn from the seeded generator, uniform in [1 MiB, 4 MiB)):
//
//   - a text segment that looks like a pg_dump COPY section: a
//     "COPY public.events (...) FROM stdin;" line, then tab-separated rows
//     "id<TAB>account_id<TAB>kind<TAB>note<TAB>created_at<TAB>amount\n" with
//     a table-wide increasing id, a random account id, a kind from 8 words,
//     a note of 2 to 9 words from a 64-word list, an increasing timestamp
//     with microseconds, and a decimal amount. zstd compresses it 3 to 4
//     times; no row repeats, so nothing deduplicates within one stream.
//   - a random segment (ChaCha8 output), which neither compresses nor
//     deduplicates: it stands for bytea/TOAST columns and already
//     compressed data.
//
// So half of the bytes (give or take the last segment, which is cut at
// size) are compressible text and half are random. Generation runs at
// several hundred MB/s per core, faster than either tool consumes it.
func Stream(seed uint64, size int64) io.Reader {
	return io.LimitReader(NewGenerator(seed), size)
}

// Generator is the endless stream Stream cuts. It is not safe for
// concurrent use.
type Generator struct {
	seg    *rand.Rand    // segment lengths (PCG)
	txt    *rand.Rand    // text fields (PCG)
	random *rand.ChaCha8 // the random segments' bytes
	buf    []byte        // text generated, not yet returned
	store  []byte        // buf's backing array, reused for every batch
	text   bool          // the current segment is text
	left   int           // bytes left in the current segment
	segLen int           // length of the current pair's segments
	rows   int           // rows written in the current COPY section
	id     int64         // next row id
	ts     int64         // current timestamp, microseconds since 2024-01-01
	only   bool          // text segments only (NewTextGenerator)
}

// NewGenerator returns the endless generator behind Stream.
func NewGenerator(seed uint64) *Generator {
	var key [32]byte
	for i := range key {
		key[i] = byte(seed >> (8 * (i % 8)))
		key[i] ^= byte(i * 37)
	}
	g := &Generator{
		seg:    rand.New(rand.NewPCG(seed, seed^0x5bd1e9955bd1e995)),
		txt:    rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15, seed)),
		random: rand.NewChaCha8(key),
		id:     1,
	}
	g.startPair()
	return g
}

// NewTextGenerator returns an endless stream of the COPY-like text alone,
// with no random segments: the compressible half of Stream, for
// benchmarks that need compressible data only.
func NewTextGenerator(seed uint64) *Generator {
	g := NewGenerator(seed)
	g.only = true
	return g
}

const (
	minSegment = 1 << 20
	maxSegment = 4 << 20
)

func (g *Generator) startPair() {
	g.segLen = minSegment + g.seg.IntN(maxSegment-minSegment)
	g.text = true
	g.left = g.segLen
	g.rows = 0
}

// Read implements io.Reader; it never fails and never ends.
func (g *Generator) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if g.left == 0 {
			if g.text && !g.only {
				g.text = false
				g.left = g.segLen
			} else {
				g.startPair()
			}
		}
		want := min(len(p)-n, g.left)
		if !g.text {
			// ChaCha8.Read fills p directly, with no intermediate copy.
			_, _ = g.random.Read(p[n : n+want])
			n += want
			g.left -= want
			continue
		}
		if len(g.buf) == 0 {
			g.fillText()
		}
		c := copy(p[n:n+want], g.buf)
		g.buf = g.buf[c:]
		n += c
		g.left -= c
		if g.left == 0 {
			// The segment ends mid-row: drop the rest of it, so the next
			// text segment starts with its COPY line.
			g.buf = g.buf[:0]
		}
	}
	return n, nil
}

var kinds = [...]string{"login", "logout", "purchase", "refund", "view", "click", "signup", "error"}

var words = [...]string{
	"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
	"india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
	"quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
	"yankee", "zulu", "account", "billing", "customer", "database", "export", "failed",
	"gateway", "history", "invoice", "journal", "kernel", "ledger", "monthly", "network",
	"order", "payment", "query", "refund", "session", "ticket", "update", "vendor",
	"warehouse", "backup", "restore", "snapshot", "cluster", "replica", "primary", "standby",
	"timeout", "retry", "success", "pending", "shipped", "delivered", "cancelled", "archived",
}

// fillText makes the next batch of rows: at least 32 KiB. Batches have a
// fixed size whatever the reader asks for, so the generator's state, and
// so the bytes, do not depend on how the stream is read.
func (g *Generator) fillText() {
	const target = 32 << 10
	b := g.store[:0]
	if g.rows == 0 {
		if g.id > 1 {
			// The previous section was cut mid-row: end it as pg_dump does.
			b = append(b, "\n\\.\n\n"...)
		}
		b = append(b, "COPY public.events (id, account_id, kind, note, created_at, amount) FROM stdin;\n"...)
	}
	r := g.txt
	for len(b) < target {
		b = strconv.AppendInt(b, g.id, 10)
		g.id++
		b = append(b, '\t')
		b = strconv.AppendInt(b, 1+r.Int64N(100000), 10)
		b = append(b, '\t')
		b = append(b, kinds[r.IntN(len(kinds))]...)
		b = append(b, '\t')
		nw := 2 + r.IntN(8)
		for i := 0; i < nw; i++ {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, words[r.IntN(len(words))]...)
		}
		b = append(b, '\t')
		g.ts += 1 + r.Int64N(5_000_000) // up to 5 s between rows
		b = appendTimestamp(b, g.ts)
		b = append(b, '\t')
		cents := r.Int64N(10_000_000)
		b = strconv.AppendInt(b, cents/100, 10)
		b = append(b, '.')
		b = append2(b, int(cents%100))
		b = append(b, '\n')
		g.rows++
	}
	g.store = b
	g.buf = b
}

// appendTimestamp formats micros (since 2024-01-01 00:00:00 UTC) like
// Postgres prints a timestamptz: "2024-01-01 00:00:00.000000+00". Months
// are taken as 30 days: the text only has to look like a timestamp.
func appendTimestamp(b []byte, micros int64) []byte {
	secs := micros / 1_000_000
	us := micros % 1_000_000
	days := secs / 86400
	sod := secs % 86400
	year := 2024 + days/360
	month := 1 + (days%360)/30
	day := 1 + days%30
	b = strconv.AppendInt(b, year, 10)
	b = append(b, '-')
	b = append2(b, int(month))
	b = append(b, '-')
	b = append2(b, int(day))
	b = append(b, ' ')
	b = append2(b, int(sod/3600))
	b = append(b, ':')
	b = append2(b, int(sod%3600/60))
	b = append(b, ':')
	b = append2(b, int(sod%60))
	b = append(b, '.')
	for d := int64(100_000); d > 0; d /= 10 {
		b = append(b, byte('0'+us/d%10))
	}
	return append(b, "+00"...)
}

func append2(b []byte, v int) []byte {
	return append(b, byte('0'+v/10%10), byte('0'+v%10))
}
