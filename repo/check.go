package repo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/scalr-platform/scalr-backup/backend"
)

// CheckOptions choose what Check verifies.
type CheckOptions struct {
	// ReadData reads every indexed pack in full: pack hash, header against
	// index, and every blob opened and hashed.
	ReadData bool
	// ReadDataSubset reads only some packs, as restic's --read-data-subset:
	// "n/t" (group n of t, by the first byte of the pack ID), "x%" (a random
	// share of the packs) or a size such as "500M" (random packs adding up
	// to about that many bytes). It cannot be combined with ReadData.
	ReadDataSubset string
	// NoLock skips the exclusive lock Check otherwise holds while it runs.
	NoLock bool
	// Workers is how many packs are read at once with ReadData (0 means 4).
	// Each holds at most one pack in memory.
	Workers int
	// Progress, when set, is called at the start of each stage (Done 0) and
	// as work in it completes. Calls are serialized.
	Progress func(CheckProgress)
	// Problem, when set, is called for every error and hint as it is found,
	// before it is added to the report. Calls are serialized.
	Problem func(CheckProblem)
}

// CheckStage names a part of Check, with the words restic prints for it.
type CheckStage string

// The stages of Check, in order.
const (
	StageLoadIndex CheckStage = "load indexes"
	StagePacks     CheckStage = "check all packs"
	StageStructure CheckStage = "check snapshots, trees and blobs"
	StageReadData  CheckStage = "read all data"
)

// CheckProgress reports how far a stage got.
type CheckProgress struct {
	Stage CheckStage
	// Message describes the stage; for a read of a subset of packs it says
	// which subset.
	Message string
	// Done counts index files, packs, trees or packs read; Total is 0 when
	// not known in advance.
	Done, Total int
}

// ProblemKind classifies a finding of Check.
type ProblemKind string

// Kinds of findings. Errors make a repository fail the check; hints (the
// kinds restic reports as non-critical) do not.
const (
	// Errors.
	ProblemKey         ProblemKind = "key"          // a key file that is damaged (content not matching its name, not decoding)
	ProblemIndex       ProblemKind = "index"        // an index file that cannot be loaded or decoded
	ProblemPackMissing ProblemKind = "pack-missing" // an indexed pack that is not stored
	ProblemPackSize    ProblemKind = "pack-size"    // a stored pack whose size differs from its index entries
	ProblemSnapshot    ProblemKind = "snapshot"     // a snapshot file that cannot be loaded
	ProblemTree        ProblemKind = "tree"         // a tree that is missing, unreadable or references what is not indexed
	ProblemPackData    ProblemKind = "pack-data"    // read-data: a pack whose content is damaged or disagrees with the index
	ProblemPackRead    ProblemKind = "pack-read"    // read-data: a pack that could not be downloaded

	// Hints.
	ProblemPackUnreferenced ProblemKind = "pack-unreferenced" // a stored pack no index names
	ProblemPackMultiIndex   ProblemKind = "pack-multi-index"  // a pack listed by more than one index file
	ProblemPackMixed        ProblemKind = "pack-mixed"        // a pack holding both tree and data blobs
	ProblemBlobDuplicate    ProblemKind = "blob-duplicate"    // a blob stored in more than one pack
	ProblemLeftover         ProblemKind = "leftover"          // a temporary file an interrupted write left
)

// CheckProblem is one finding, naming the object it is about.
type CheckProblem struct {
	Kind ProblemKind `json:"kind"`
	// Object is the stored file or blob: "index/ID", "data/12/ID",
	// "snapshots/ID", "tree ID", "data blob ID".
	Object string `json:"object"`
	// Snapshot and Path say where a tree problem was found: the first
	// snapshot reaching the tree and the tree's directory in it.
	Snapshot string `json:"snapshot,omitempty"`
	Path     string `json:"path,omitempty"`
	Message  string `json:"message"`
}

func (p CheckProblem) String() string {
	s := p.Object
	if p.Snapshot != "" {
		short := p.Snapshot
		if len(short) > 8 {
			short = short[:8]
		}
		s += fmt.Sprintf(" (at %s in snapshot %s)", p.Path, short)
	}
	return s + ": " + p.Message
}

// CheckReport is what Check found.
type CheckReport struct {
	IndexFiles int `json:"index_files"`
	// Packs is the number of packs the index names; StoredPacks the number
	// found in data/.
	Packs       int   `json:"packs"`
	StoredPacks int   `json:"stored_packs"`
	Snapshots   int   `json:"snapshots"`
	Trees       int   `json:"trees"`
	PacksRead   int   `json:"packs_read"`
	BytesRead   int64 `json:"bytes_read"`

	Errors []CheckProblem `json:"errors"`
	Hints  []CheckProblem `json:"hints"`
	// BrokenPacks lists packs whose stored bytes are damaged (wrong size or
	// content), sorted.
	BrokenPacks []ID `json:"broken_packs"`
	// IndexDamaged is set when an index file could not be loaded. As restic
	// does, Check then stops after loading the index: every later stage
	// needs a complete index.
	IndexDamaged bool `json:"index_damaged"`
}

// Ok reports whether no errors were found (hints are not errors).
func (rep *CheckReport) Ok() bool { return len(rep.Errors) == 0 }

// SuggestRepairIndex reports whether rebuilding the index would help, as
// restic's summary field of that name.
func (rep *CheckReport) SuggestRepairIndex() bool {
	if rep.IndexDamaged || rep.IndexIncomplete() {
		return true
	}
	for _, h := range rep.Hints {
		if h.Kind == ProblemPackMultiIndex {
			return true
		}
	}
	return false
}

// IndexIncomplete reports packs that no index file names while snapshots
// need blobs missing from the index: the index lost entries (index files
// deleted or damaged), and prune cannot tell used data from unused until
// the index is rebuilt from the packs.
func (rep *CheckReport) IndexIncomplete() bool {
	unreferenced, treeErrors := false, false
	for _, h := range rep.Hints {
		unreferenced = unreferenced || h.Kind == ProblemPackUnreferenced
	}
	for _, e := range rep.Errors {
		treeErrors = treeErrors || e.Kind == ProblemTree
	}
	return unreferenced && treeErrors
}

// SuggestPrune reports whether a prune would tidy the repository (packs no
// index names, mixed packs, duplicate blobs).
func (rep *CheckReport) SuggestPrune() bool {
	for _, h := range rep.Hints {
		switch h.Kind {
		case ProblemPackUnreferenced:
			if !rep.IndexIncomplete() {
				return true
			}
		case ProblemPackMixed, ProblemBlobDuplicate, ProblemLeftover:
			return true
		}
	}
	return false
}

// DataSubset selects packs for a partial read, as restic's
// --read-data-subset: exactly one of the forms is set.
type DataSubset struct {
	// Group of Groups ("n/t"): packs whose ID's first byte modulo Groups is
	// Group-1. Running every group from 1 to t reads every pack once.
	Group, Groups uint
	// Percent ("x%"): that share of the packs, chosen at random (at least
	// one pack).
	Percent float64
	// Bytes ("500M"): random packs making up about that share of the total
	// pack size.
	Bytes int64
}

// checkMaxSubsetGroups bounds t in "n/t": groups are chosen by one byte.
const checkMaxSubsetGroups = 256

// ParseDataSubset reads "n/t", "x%" (or "x.y%") or a size with an optional
// b, k, m, g or t suffix (powers of 1024), with restic's limits.
func ParseDataSubset(s string) (DataSubset, error) {
	var d DataSubset
	invalid := fmt.Errorf("invalid read-data subset %q: want n/t, x%% or a size such as 500M", s)
	switch {
	case s == "":
		return d, invalid
	case strings.Contains(s, "/"):
		n, t, _ := strings.Cut(s, "/")
		nv, err1 := strconv.ParseUint(n, 10, 32)
		tv, err2 := strconv.ParseUint(t, 10, 32)
		if err1 != nil || err2 != nil {
			return d, invalid
		}
		if nv == 0 || tv == 0 || nv > tv {
			return d, fmt.Errorf("invalid read-data subset %q: n/t must be positive integers with n <= t, e.g. 1/2", s)
		}
		if tv > checkMaxSubsetGroups {
			return d, fmt.Errorf("invalid read-data subset %q: t must be at most %d", s, checkMaxSubsetGroups)
		}
		d.Group, d.Groups = uint(nv), uint(tv)
	case strings.HasSuffix(s, "%"):
		p, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil {
			return d, invalid
		}
		if !(p > 0 && p <= 100) {
			return d, fmt.Errorf("invalid read-data subset %q: x%% must be above 0%% and at most 100%%", s)
		}
		d.Percent = p
	default:
		n, err := parseByteSize(s)
		if err != nil {
			return d, invalid
		}
		if n <= 0 {
			return d, fmt.Errorf("invalid read-data subset %q: the size must be above 0", s)
		}
		d.Bytes = n
	}
	return d, nil
}

// parseByteSize reads a byte count as restic's flags take it: a number
// with an optional unit b, k, m, g or t (either case, powers of 1024).
// check's --read-data-subset and prune's --max-unused use it.
func parseByteSize(s string) (int64, error) {
	num, unit := s, uint64(1)
	switch s[len(s)-1] {
	case 'b', 'B':
		num = s[:len(s)-1]
	case 'k', 'K':
		num, unit = s[:len(s)-1], 1<<10
	case 'm', 'M':
		num, unit = s[:len(s)-1], 1<<20
	case 'g', 'G':
		num, unit = s[:len(s)-1], 1<<30
	case 't', 'T':
		num, unit = s[:len(s)-1], 1<<40
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return v, nil
	}
	hi, lo := bits.Mul64(uint64(v), unit)
	if hi != 0 || lo > 1<<63-1 {
		return 0, strconv.ErrRange
	}
	return int64(lo), nil
}

func (d DataSubset) String() string {
	switch {
	case d.Groups > 0:
		return fmt.Sprintf("%d/%d", d.Group, d.Groups)
	case d.Percent > 0:
		return strconv.FormatFloat(d.Percent, 'f', -1, 64) + "%"
	}
	return strconv.FormatInt(d.Bytes, 10)
}

// Select picks the packs to read from packs (ID to size).
func (d DataSubset) Select(packs map[ID]int64) []ID {
	all := checkSortedIDs(packs)
	if d.Groups > 0 {
		var out []ID
		for _, id := range all {
			if uint(id[0])%d.Groups == d.Group-1 {
				out = append(out, id)
			}
		}
		return out
	}
	pct := d.Percent
	if d.Bytes > 0 {
		var total int64
		for _, s := range packs {
			total += s
		}
		if total == 0 {
			return nil
		}
		pct = 100
		if d.Bytes < total {
			pct = float64(d.Bytes) / float64(total) * 100
		}
	}
	n := int(float64(len(all)) * pct / 100)
	if n < 1 && len(all) > 0 {
		n = 1
	}
	var out []ID
	for _, i := range rand.Perm(len(all))[:n] {
		out = append(out, all[i])
	}
	sortIDs(out)
	return out
}

func checkSortedIDs[V any](m map[ID]V) []ID {
	out := make([]ID, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sortIDs(out)
	return out
}

// Check verifies the repository as restic's check does, without a cache:
//
//   - key files: each one's content matches its name and decodes (restic's
//     check does not look at keys, but restic 0.16+ refuses to open a
//     repository when it reads a damaged key file before a good one);
//   - load indexes: every index file loads and decodes (each one that does
//     not is an error; if any fails, Check stops here, as restic does);
//   - check all packs: one LIST of data/; every indexed pack is stored with
//     the size its index entries imply (errors); stored packs no index names
//     are hints, as are packs in several index files, mixed packs and blobs
//     stored in more than one pack; temporary files left by interrupted
//     writes are hints too (prune removes them once old enough);
//   - check snapshots, trees and blobs: every snapshot loads, and every tree
//     they reach is indexed, loads, decodes and references only indexed data
//     blobs and subtrees (errors name the tree, the snapshot and the path);
//   - with ReadData or ReadDataSubset: every selected pack is downloaded
//     once and hashed against its name, its header is decoded from the
//     bytes read and compared with the index entry by entry, and every blob
//     is opened (MAC, decompression, SHA-256); the index must place the
//     blobs without gaps or overlaps.
//
// Findings go into the report; the error is only for what stopped the
// check itself (a lock held by another process, a failing LIST, a
// cancelled context, invalid options).
func (r *Repository) Check(ctx context.Context, opts CheckOptions) (*CheckReport, error) {
	var subset *DataSubset
	if opts.ReadDataSubset != "" {
		if opts.ReadData {
			return nil, errors.New("check: read-data and read-data-subset cannot be used together")
		}
		d, err := ParseDataSubset(opts.ReadDataSubset)
		if err != nil {
			return nil, err
		}
		subset = &d
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if !opts.NoLock {
		// A check whose lock goes stale stops: a prune may have started.
		held, done, err := r.Hold(ctx, true, "check")
		if err != nil {
			return nil, err
		}
		defer done()
		ctx = held
	}
	c := &checkRun{
		r: r, opts: opts,
		rep:      &CheckReport{Errors: []CheckProblem{}, Hints: []CheckProblem{}, BrokenPacks: []ID{}},
		broken:   map[ID]bool{},
		idx:      NewIndex(),
		packs:    map[ID][]Blob{},
		packSize: map[ID]int64{},
		stored:   map[ID]int64{},
		copies:   map[BlobHandle][]PackedBlob{},
	}
	if err := c.checkKeys(ctx); err != nil {
		return nil, err
	}
	if err := c.loadIndex(ctx); err != nil {
		return nil, err
	}
	if c.rep.IndexDamaged {
		return c.finish(), nil
	}
	if err := c.checkPacks(ctx); err != nil {
		return nil, err
	}
	if err := c.checkLeftovers(ctx); err != nil {
		return nil, err
	}
	if err := c.checkStructure(ctx); err != nil {
		return nil, err
	}
	switch {
	case opts.ReadData:
		if err := c.readData(ctx, checkSortedIDs(c.packSize), string(StageReadData)); err != nil {
			return nil, err
		}
	case subset != nil:
		sel := subset.Select(c.packSize)
		var msg string
		switch {
		case subset.Groups > 0:
			msg = fmt.Sprintf("read group #%d of %d data packs (out of total %d packs in %d groups)", subset.Group, len(sel), len(c.packSize), subset.Groups)
		case subset.Percent > 0:
			msg = fmt.Sprintf("read %.1f%% of data packs", subset.Percent)
		default:
			msg = fmt.Sprintf("read %d bytes of data packs", subset.Bytes)
		}
		if err := c.readData(ctx, sel, msg); err != nil {
			return nil, err
		}
	}
	return c.finish(), nil
}

// checkRun is the state of one Check run.
type checkRun struct {
	r    *Repository
	opts CheckOptions

	mu     sync.Mutex // guards rep, broken and the callbacks
	rep    *CheckReport
	broken map[ID]bool

	// idx is built from the index files loaded here (not r.Index, which
	// may be stale or stop at the first unreadable file).
	idx *Index
	// packs holds each indexed pack's entries from every index file,
	// duplicates of a blob in other packs included, sorted by offset.
	packs map[ID][]Blob
	// packSize is each indexed pack's size implied by its entries.
	packSize map[ID]int64
	// stored is data/ as listed.
	stored map[ID]int64
	// copies lists every location of blobs stored in more than one pack.
	copies map[BlobHandle][]PackedBlob
}

func (c *checkRun) progress(stage CheckStage, msg string, done, total int) {
	if c.opts.Progress == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts.Progress(CheckProgress{Stage: stage, Message: msg, Done: done, Total: total})
}

// Hint reports whether findings of kind k are non-critical.
func (k ProblemKind) Hint() bool {
	switch k {
	case ProblemPackUnreferenced, ProblemPackMultiIndex, ProblemPackMixed, ProblemBlobDuplicate, ProblemLeftover:
		return true
	}
	return false
}

func (c *checkRun) report(p CheckProblem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opts.Problem != nil {
		c.opts.Problem(p)
	}
	if p.Kind.Hint() {
		c.rep.Hints = append(c.rep.Hints, p)
	} else {
		c.rep.Errors = append(c.rep.Errors, p)
	}
}

func (c *checkRun) markBroken(id ID) {
	c.mu.Lock()
	c.broken[id] = true
	c.mu.Unlock()
}

func (c *checkRun) finish() *CheckReport {
	c.rep.BrokenPacks = append(c.rep.BrokenPacks[:0], checkSortedIDs(c.broken)...)
	return c.rep
}

func checkPackObject(id ID) string {
	return backend.Handle{Type: backend.PackFile, Name: id.String()}.String()
}

// checkProblemText is err's message without the object name when err is a
// CorruptError about object itself.
func checkProblemText(object string, err error) string {
	var ce *CorruptError
	if errors.As(err, &ce) && ce.Object == object {
		return ce.Err.Error()
	}
	return err.Error()
}

// loadIndex loads every index file on its own, so each unreadable one is
// reported and the others still load, then derives the per-pack view.
func (c *checkRun) loadIndex(ctx context.Context) error {
	c.progress(StageLoadIndex, string(StageLoadIndex), 0, 0)
	ids, err := c.r.listIndexFiles(ctx)
	if err != nil {
		return err
	}
	files, err := c.loadIndexFiles(ctx, ids)
	if err != nil {
		return err
	}
	c.rep.IndexFiles = len(ids)
	for _, e := range c.rep.Errors {
		c.rep.IndexDamaged = c.rep.IndexDamaged || e.Kind == ProblemIndex
	}
	if c.rep.IndexDamaged {
		return nil
	}
	inFiles := c.collectPacks(ids, files)
	where := c.examinePacks(inFiles)
	c.reportDuplicates(where)
	c.rep.Packs = len(c.packs)
	return nil
}

// loadIndexFiles loads the index files ids (in that order), reporting each
// that cannot be read (nil in the result).
func (c *checkRun) loadIndexFiles(ctx context.Context, ids []ID) ([]*IndexJSON, error) {
	files := make([]*IndexJSON, len(ids))
	pos := make(map[ID]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	var done int
	err := forEachParallel(ctx, ids, 8, func(ctx context.Context, id ID) error {
		ij, err := c.r.loadIndexFile(ctx, id)
		files[pos[id]] = ij
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			obj := "index/" + id.String()
			c.report(CheckProblem{Kind: ProblemIndex, Object: obj, Message: checkProblemText(obj, err)})
		}
		c.mu.Lock()
		done++
		n := done
		c.mu.Unlock()
		c.progress(StageLoadIndex, string(StageLoadIndex), n, len(ids))
		return nil
	})
	return files, err
}

// collectPacks fills c.packs with every pack's distinct entries from all
// index files, and returns which files list each pack.
func (c *checkRun) collectPacks(ids []ID, files []*IndexJSON) map[ID][]ID {
	type entryKey struct {
		pack ID
		blob Blob
	}
	seen := map[entryKey]bool{}
	inFiles := map[ID][]ID{}
	for i, ij := range files {
		c.idx.addFile(ids[i], ij)
		for _, p := range ij.Packs {
			if len(p.Blobs) == 0 {
				continue
			}
			if l := inFiles[p.ID]; len(l) == 0 || l[len(l)-1] != ids[i] {
				inFiles[p.ID] = append(l, ids[i])
			}
			for _, b := range p.Blobs {
				blob := b.Blob()
				k := entryKey{p.ID, blob}
				if seen[k] {
					continue
				}
				seen[k] = true
				c.packs[p.ID] = append(c.packs[p.ID], blob)
			}
		}
	}
	return inFiles
}

// examinePacks sorts each pack's blobs, derives its size, reports packs
// listed in several index files and packs mixing blob types, and returns
// where each blob is stored.
func (c *checkRun) examinePacks(inFiles map[ID][]ID) map[BlobHandle][]PackedBlob {
	where := map[BlobHandle][]PackedBlob{}
	for _, id := range checkSortedIDs(c.packs) {
		blobs := c.packs[id]
		sort.SliceStable(blobs, func(i, j int) bool { return blobs[i].Offset < blobs[j].Offset })
		c.packSize[id] = PackSize(blobs)
		types := map[BlobType]bool{}
		for _, b := range blobs {
			types[b.Type] = true
			where[b.BlobHandle] = append(where[b.BlobHandle], PackedBlob{Blob: b, PackID: id})
		}
		if fs := inFiles[id]; len(fs) > 1 {
			names := make([]string, len(fs))
			for i, f := range fs {
				names[i] = f.Str()
			}
			c.report(CheckProblem{Kind: ProblemPackMultiIndex, Object: checkPackObject(id),
				Message: fmt.Sprintf("contained in several indexes: %s", strings.Join(names, ", "))})
		}
		if len(types) > 1 {
			c.report(CheckProblem{Kind: ProblemPackMixed, Object: checkPackObject(id), Message: "contains a mix of tree and data blobs"})
		}
	}
	return where
}

// reportDuplicates reports every blob stored more than once, in ID order,
// and keeps its copies in c.copies.
func (c *checkRun) reportDuplicates(where map[BlobHandle][]PackedBlob) {
	handles := make([]BlobHandle, 0)
	for h, locs := range where {
		if len(locs) > 1 {
			handles = append(handles, h)
		}
	}
	sort.Slice(handles, func(i, j int) bool {
		if c := bytes.Compare(handles[i].ID[:], handles[j].ID[:]); c != 0 {
			return c < 0
		}
		return handles[i].Type < handles[j].Type
	})
	for _, h := range handles {
		locs := where[h]
		c.copies[h] = locs
		packs := make([]string, 0, len(locs))
		distinct := map[ID]bool{}
		for _, l := range locs {
			if !distinct[l.PackID] {
				distinct[l.PackID] = true
				packs = append(packs, l.PackID.Str())
			}
		}
		msg := fmt.Sprintf("stored %d times, in packs %s", len(locs), strings.Join(packs, ", "))
		c.report(CheckProblem{Kind: ProblemBlobDuplicate, Object: h.Type.String() + " blob " + h.ID.String(), Message: msg})
	}
}

// checkPacks compares the index with one LIST of data/.
func (c *checkRun) checkPacks(ctx context.Context) error {
	c.progress(StagePacks, string(StagePacks), 0, len(c.packSize))
	err := c.r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if id, err := ParseID(fi.Name); err == nil {
			c.stored[id] = fi.Size
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	c.rep.StoredPacks = len(c.stored)
	for i, id := range checkSortedIDs(c.packSize) {
		want := c.packSize[id]
		got, ok := c.stored[id]
		switch {
		case !ok:
			c.report(CheckProblem{Kind: ProblemPackMissing, Object: checkPackObject(id), Message: "does not exist"})
		case got != want:
			c.markBroken(id)
			c.report(CheckProblem{Kind: ProblemPackSize, Object: checkPackObject(id),
				Message: fmt.Sprintf("unexpected file size: got %d, expected %d", got, want)})
		}
		c.progress(StagePacks, string(StagePacks), i+1, len(c.packSize))
	}
	for _, id := range checkSortedIDs(c.stored) {
		if _, ok := c.packSize[id]; !ok {
			c.report(CheckProblem{Kind: ProblemPackUnreferenced, Object: checkPackObject(id), Message: "not referenced in any index"})
		}
	}
	return ctx.Err()
}

// checkTreeJob is one tree to check: the first snapshot and path reaching it.
type checkTreeJob struct {
	id   ID
	snap ID
	path string
}

// checkStructure loads every snapshot and walks every tree they reach once.
func (c *checkRun) checkStructure(ctx context.Context) error {
	c.progress(StageStructure, string(StageStructure), 0, 0)
	var ids []ID
	err := c.r.be.List(ctx, backend.SnapshotFile, func(fi backend.FileInfo) error {
		if id, err := ParseID(fi.Name); err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	sortIDs(ids)
	c.rep.Snapshots = len(ids)
	snaps := make([]*Snapshot, len(ids))
	pos := make(map[ID]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	err = forEachParallel(ctx, ids, 8, func(ctx context.Context, id ID) error {
		sn, err := c.r.LoadSnapshot(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			obj := "snapshots/" + id.String()
			c.report(CheckProblem{Kind: ProblemSnapshot, Object: obj, Message: checkProblemText(obj, err)})
			return nil
		}
		snaps[pos[id]] = sn
		return nil
	})
	if err != nil {
		return err
	}

	// A shared work list rather than recursion: trees are checked once
	// each, by a few workers, whatever the depth or number of snapshots.
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		queue   []checkTreeJob
		visited = map[ID]bool{}
		active  int
		done    int
	)
	for _, sn := range snaps {
		if sn == nil || visited[*sn.Tree] {
			continue
		}
		visited[*sn.Tree] = true
		queue = append(queue, checkTreeJob{id: *sn.Tree, snap: sn.ID, path: "/"})
	}
	worker := func() {
		for {
			mu.Lock()
			for len(queue) == 0 && active > 0 && ctx.Err() == nil {
				cond.Wait()
			}
			if len(queue) == 0 || ctx.Err() != nil {
				cond.Broadcast()
				mu.Unlock()
				return
			}
			job := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			active++
			mu.Unlock()

			subtrees := c.checkTree(ctx, job)

			mu.Lock()
			for _, s := range subtrees {
				if !visited[s.id] {
					visited[s.id] = true
					queue = append(queue, s)
				}
			}
			active--
			done++
			n := done
			cond.Broadcast()
			mu.Unlock()
			c.progress(StageStructure, string(StageStructure), n, 0)
		}
	}
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		cond.Broadcast()
		mu.Unlock()
	})
	defer stop()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker()
		}()
	}
	wg.Wait()
	c.rep.Trees = done
	return ctx.Err()
}

// loadTreeBlob loads tree blob id through the check's own index, trying
// every stored copy before giving up.
func (c *checkRun) loadTreeBlob(ctx context.Context, id ID) ([]byte, error) {
	h := BlobHandle{ID: id, Type: TreeBlob}
	locs := c.copies[h]
	if len(locs) == 0 {
		pb, ok := c.idx.Lookup(h)
		if !ok {
			return nil, errCheckNotIndexed
		}
		locs = []PackedBlob{pb}
	}
	var firstErr error
	for _, pb := range locs {
		ph := backend.Handle{Type: backend.PackFile, Name: pb.PackID.String()}
		sealed, err := loadRange(ctx, c.r.be, ph, int64(pb.Length), int64(pb.Offset))
		if err == nil {
			var plain []byte
			if plain, err = c.r.openBlob(pb.Blob, sealed, nil); err == nil {
				return plain, nil
			}
			err = fmt.Errorf("%s: %w", ph, err)
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

var errCheckNotIndexed = errors.New("not found in index")

// checkTree checks one tree and returns its subtrees to visit.
func (c *checkRun) checkTree(ctx context.Context, job checkTreeJob) []checkTreeJob {
	obj := "tree " + job.id.String()
	fail := func(format string, args ...any) {
		c.report(CheckProblem{Kind: ProblemTree, Object: obj, Snapshot: job.snap.String(), Path: job.path, Message: fmt.Sprintf(format, args...)})
	}
	buf, err := c.loadTreeBlob(ctx, job.id)
	if err != nil {
		if ctx.Err() == nil {
			fail("%v", err)
		}
		return nil
	}
	t, err := DecodeTree(buf)
	if err != nil {
		fail("%v", err)
		return nil
	}
	var subtrees []checkTreeJob
	for _, n := range t.Nodes {
		if n.Name == "" {
			fail("node with empty name")
		}
		switch n.Type {
		case NodeFile:
			if n.Content == nil {
				fail("file %q has nil blob list", n.Name)
			}
			for i, id := range n.Content {
				if id.IsNull() {
					fail("file %q blob %d has null ID", n.Name, i)
					continue
				}
				if !c.idx.Has(BlobHandle{ID: id, Type: DataBlob}) {
					fail("file %q: data blob %s (part %d) not found in index", n.Name, id, i)
				}
			}
		case NodeDir:
			if n.Subtree == nil {
				fail("dir node %q has no subtree", n.Name)
				continue
			}
			if n.Subtree.IsNull() {
				fail("dir node %q subtree id is null", n.Name)
				continue
			}
			subtrees = append(subtrees, checkTreeJob{id: *n.Subtree, snap: job.snap, path: strings.TrimSuffix(job.path, "/") + "/" + n.Name})
		case NodeSymlink, "socket", "chardev", "dev", "fifo":
		default:
			fail("node %q with invalid type %q", n.Name, n.Type)
		}
	}
	return subtrees
}

// maxCheckedPack bounds what one read-data worker holds: no valid pack is
// larger (the biggest target size plus one maximal blob and a full header).
const maxCheckedPack = MaxPackSize + 8<<20 + maxHeaderSize + 1<<20

// readData reads the given packs on opts.Workers workers.
func (c *checkRun) readData(ctx context.Context, packs []ID, msg string) error {
	var todo []ID
	for _, id := range packs {
		// Missing packs are already reported; reading them only repeats it.
		if _, ok := c.stored[id]; ok {
			todo = append(todo, id)
		}
	}
	c.progress(StageReadData, msg, 0, len(todo))
	var (
		mu   sync.Mutex
		done int
	)
	bufs := make(chan *packReadBuf, c.opts.Workers)
	for i := 0; i < c.opts.Workers; i++ {
		bufs <- &packReadBuf{}
	}
	err := forEachParallel(ctx, todo, c.opts.Workers, func(ctx context.Context, id ID) error {
		buf := <-bufs
		defer func() { bufs <- buf }()
		n := c.readPack(ctx, id, buf)
		mu.Lock()
		done++
		d := done
		c.rep.PacksRead++
		c.rep.BytesRead += n
		mu.Unlock()
		c.progress(StageReadData, msg, d, len(todo))
		return ctx.Err()
	})
	return err
}

// packReadBuf is one read-data worker's reusable state: a small read
// buffer for streaming a pack, and the tail (header) of the last pack.
type packReadBuf struct {
	rd   *bufio.Reader
	tail bytes.Buffer
}

// checkStreamBuffer is the read buffer of a streamed pack: large enough
// for few reads per blob, small beside a whole pack.
const checkStreamBuffer = 256 << 10

// readPack downloads pack id and verifies it against the index, returning
// the bytes read. A healthy pack is verified as it streams by, one blob at
// a time, so a worker holds about one blob instead of the whole pack (the
// cause of check's memory being twice restic's). A pack the stream finds
// anything wrong with is downloaded again whole and examined by
// readPackWhole, which explains every problem; damage is rare, so that
// second download costs nothing on a healthy repository.
func (c *checkRun) readPack(ctx context.Context, id ID, buf *packReadBuf) int64 {
	entries := c.packs[id]
	if n, ok := c.streamPack(ctx, id, entries, buf); ok || ctx.Err() != nil {
		return n
	}
	var whole bytes.Buffer
	return c.readPackWhole(ctx, id, &whole)
}

// streamPack reads pack id once from start to end, hashing it, verifying
// each indexed blob as it passes and decoding the header at the end. It
// reports ok only if the pack is exactly what the index describes; any
// doubt (a read error, a bad blob, a header that differs, an odd layout)
// is !ok, for readPackWhole to explain.
func (c *checkRun) streamPack(ctx context.Context, id ID, entries []Blob, buf *packReadBuf) (int64, bool) {
	var end uint64
	for _, b := range entries {
		if uint64(b.Offset) != end {
			return 0, false // readPackWhole reports the layout
		}
		end += uint64(b.Length)
	}
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	rd, err := c.r.be.Load(ctx, h, 0, 0)
	if err != nil {
		return 0, false
	}
	defer rd.Close()
	hasher := sha256.New()
	counted := &countingReader{r: io.TeeReader(rd, hasher)}
	if buf.rd == nil {
		buf.rd = bufio.NewReaderSize(counted, checkStreamBuffer)
	} else {
		buf.rd.Reset(counted)
	}
	defer buf.rd.Reset(nil)
	for _, b := range entries {
		if ctx.Err() != nil {
			return counted.n, false
		}
		if !c.streamBlob(buf.rd, b) {
			return counted.n, false
		}
	}
	// The rest is the sealed header and its length; anything longer than a
	// valid header can be is left for readPackWhole to report.
	buf.tail.Reset()
	if _, err := buf.tail.ReadFrom(io.LimitReader(buf.rd, maxHeaderSize+4+1)); err != nil {
		return counted.n, false
	}
	tail := buf.tail.Bytes()
	if buf.tail.Cap() > 1<<20 {
		buf.tail = bytes.Buffer{}
	}
	size := int64(end) + int64(len(tail))
	var got ID
	hasher.Sum(got[:0])
	if got != id || len(tail) < 4 || len(tail) > maxHeaderSize+4 {
		return counted.n, false
	}
	hdrLen, err := parseHeaderLength(tail[len(tail)-4:], size)
	if err != nil || hdrLen+4 != int64(len(tail)) {
		return counted.n, false
	}
	header, err := openHeader(c.r.key, tail[:hdrLen], size)
	if err != nil || len(header) != len(entries) {
		return counted.n, false
	}
	for i := range header {
		if header[i] != entries[i] {
			return counted.n, false
		}
	}
	return counted.n, true
}

// streamBlob reads blob b from rd into a pooled buffer and verifies it,
// decrypting where it was read: the buffer is this pass's own, and a
// second one per blob was a third of check's garbage.
func (c *checkRun) streamBlob(rd io.Reader, b Blob) bool {
	if b.Length > maxCheckedPack {
		return false // a damaged entry must not size a buffer
	}
	sealed := c.r.getBuf(int(b.Length))[:b.Length]
	defer c.r.putBuf(sealed)
	if _, err := io.ReadFull(rd, sealed); err != nil {
		return false
	}
	// As in checkVerifyBlob, only a plausible length sizes the
	// decompression buffer up front.
	var dst []byte
	if b.IsCompressed() && b.UncompressedLength <= pooledBufSize {
		dst = c.r.getBuf(int(b.UncompressedLength))
		defer c.r.putBuf(dst)
	}
	_, err := c.r.openBlobInPlace(b, sealed, dst)
	return err == nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	cr.n += int64(n)
	return n, err
}

// readPackWhole downloads pack id once into buf, hashing as it reads, and
// verifies it against the index, reporting every problem. It returns the
// bytes read.
func (c *checkRun) readPackWhole(ctx context.Context, id ID, buf *bytes.Buffer) int64 {
	obj := checkPackObject(id)
	pv := &packVerifier{r: c.r}
	defer func() {
		if len(pv.problems) > 0 && ctx.Err() == nil {
			c.markBroken(id)
			for _, p := range pv.problems {
				c.report(CheckProblem{Kind: ProblemPackData, Object: obj, Message: p})
			}
		}
	}()
	entries := c.packs[id]
	pv.checkLayout(entries)

	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	rd, err := c.r.be.Load(ctx, h, 0, 0)
	if err != nil {
		if ctx.Err() == nil {
			c.report(CheckProblem{Kind: ProblemPackRead, Object: obj, Message: fmt.Sprintf("download error: %v", err)})
		}
		return 0
	}
	buf.Reset()
	if s := c.stored[id]; s > 0 && s <= maxCheckedPack {
		buf.Grow(int(s) + bytes.MinRead)
	}
	hasher := sha256.New()
	n, err := buf.ReadFrom(io.TeeReader(io.LimitReader(rd, maxCheckedPack+1), hasher))
	rd.Close()
	if err != nil {
		pv.fail("partial download error after %d bytes: %v", n, err)
		return n
	}
	if n > maxCheckedPack {
		pv.fail("pack is larger than any valid pack (more than %d bytes)", int64(maxCheckedPack))
		return n
	}
	pv.data = buf.Bytes()
	var got ID
	hasher.Sum(got[:0])
	if got != id {
		pv.fail("unexpected pack id %s: the content's SHA-256 does not match the name", got)
	}

	// Header entries, decoded from the bytes already read.
	header, herr := decodePackTail(c.r.key, pv.data)
	if herr != nil {
		pv.fail("%v", herr)
	}
	// Every blob the index or the header places in this pack must open.
	for _, b := range entries {
		pv.verify(b, "index")
	}
	if herr == nil {
		pv.compareHeader(entries, header)
	}
	return n
}

// packVerifier collects what is wrong with one downloaded pack.
type packVerifier struct {
	r        *Repository
	data     []byte // the whole pack
	problems []string
	// opened are the blob spans already verified, each once.
	opened map[BlobHandle]map[blobSpan]bool
}

type blobSpan struct{ off, length, ulen uint32 }

func (pv *packVerifier) fail(format string, args ...any) {
	pv.problems = append(pv.problems, fmt.Sprintf(format, args...))
}

// checkLayout requires the index to place the blobs back to back from
// offset 0.
func (pv *packVerifier) checkLayout(entries []Blob) {
	var end uint64
	for _, b := range entries {
		if uint64(b.Offset) != end {
			pv.fail("index for pack contains gaps / overlapping blobs: %v blob %s at offset %d, previous blob ends at %d", b.Type, b.ID, b.Offset, end)
			return
		}
		end += uint64(b.Length)
	}
}

// verify decrypts and hashes blob b of the pack (once per span); from
// says who placed it there (index or header).
func (pv *packVerifier) verify(b Blob, from string) {
	s := blobSpan{b.Offset, b.Length, b.UncompressedLength}
	if pv.opened == nil {
		pv.opened = map[BlobHandle]map[blobSpan]bool{}
	}
	if pv.opened[b.BlobHandle][s] {
		return
	}
	if pv.opened[b.BlobHandle] == nil {
		pv.opened[b.BlobHandle] = map[blobSpan]bool{}
	}
	pv.opened[b.BlobHandle][s] = true
	if uint64(b.Offset)+uint64(b.Length) > uint64(len(pv.data)) {
		pv.fail("%v blob %s (%s: offset %d, length %d) extends past the end of the %d-byte pack", b.Type, b.ID, from, b.Offset, b.Length, len(pv.data))
		return
	}
	if err := checkVerifyBlob(pv.r, b, pv.data[b.Offset:b.Offset+b.Length]); err != nil {
		pv.fail("%v blob %s at offset %d: %v", b.Type, b.ID, b.Offset, err)
	}
}

// compareHeader requires the pack's header and the index to agree entry
// for entry; header entries the index lacks are verified too.
func (pv *packVerifier) compareHeader(entries, header []Blob) {
	inIndex := map[Blob]bool{}
	for _, b := range entries {
		inIndex[b] = true
	}
	inHeader := map[Blob]bool{}
	for _, b := range header {
		inHeader[b] = true
	}
	// Index entries the header lacks, by handle, to pair them with the
	// header entries they differ from.
	unmatched := map[BlobHandle][]Blob{}
	for _, e := range entries {
		if !inHeader[e] {
			unmatched[e.BlobHandle] = append(unmatched[e.BlobHandle], e)
		}
	}
	for _, b := range header {
		if inIndex[b] {
			continue
		}
		pv.verify(b, "header")
		if l := unmatched[b.BlobHandle]; len(l) > 0 {
			unmatched[b.BlobHandle] = l[1:]
			pv.fail("%v blob %s: pack header says %s, index says %s", b.Type, b.ID, checkDescribeEntry(b), checkDescribeEntry(l[0]))
		} else {
			pv.fail("%v blob %s in the pack header (%s) is not contained in the index for this pack", b.Type, b.ID, checkDescribeEntry(b))
		}
	}
	for _, e := range entries {
		if l := unmatched[e.BlobHandle]; len(l) > 0 && l[0] == e {
			unmatched[e.BlobHandle] = l[1:]
			pv.fail("%v blob %s is indexed for this pack (%s) but not in its header", e.Type, e.ID, checkDescribeEntry(e))
		}
	}
}

func checkDescribeEntry(b Blob) string {
	s := fmt.Sprintf("type %v, offset %d, length %d", b.Type, b.Offset, b.Length)
	if b.IsCompressed() {
		s += fmt.Sprintf(", uncompressed length %d", b.UncompressedLength)
	}
	return s
}

// checkVerifyBlob authenticates, decrypts, decompresses and hashes one blob.
// Its buffers come from the repository's pool: a read-data pass opens
// every blob, and fresh buffers per blob were most of check's garbage.
func checkVerifyBlob(r *Repository, b Blob, sealed []byte) error {
	plain, err := r.key.Open(r.getBuf(len(sealed)), sealed)
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	defer func() { r.putBuf(plain) }()
	if b.IsCompressed() {
		// The length comes from the index or a header, which may be
		// damaged: only a plausible one sizes the buffer up front.
		var dst []byte
		if b.UncompressedLength <= pooledBufSize {
			dst = r.getBuf(int(b.UncompressedLength))
		}
		out, err := r.dec.DecodeAll(plain, dst)
		if err != nil {
			r.putBuf(dst)
			return fmt.Errorf("decompress: %w", err)
		}
		r.putBuf(plain)
		plain = out
		if uint32(len(out)) != b.UncompressedLength {
			return fmt.Errorf("decompressed to %d bytes, the entry says %d", len(out), b.UncompressedLength)
		}
	}
	if got := Hash(plain); got != b.ID {
		return fmt.Errorf("content hash is %s", got)
	}
	return nil
}
