package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scalr-platform/scalr-backup/chunker"
)

// Stream is one named file of a stream backup. Its Reader is read to the
// end; then Close (if set) is called, and an error from either aborts the
// whole backup before any snapshot is written. That is how a dump command's
// exit status reaches the repository: a failed dump never becomes a snapshot.
type Stream struct {
	// Name is the file's path inside the snapshot, relative ("app.pgdump",
	// "nested/dir/file"); it must be clean and not empty.
	Name   string
	Reader io.Reader
	Close  func() error
}

// BackupOptions describe the snapshot a stream backup makes.
type BackupOptions struct {
	Tags     []string
	Hostname string
	// Time is the snapshot time and every node's times (default: now).
	Time time.Time
	// ProgramVersion is recorded in the snapshot, e.g. "scalr-backup 1.0".
	ProgramVersion string
	// Progress, when set, is called after each chunk is stored.
	Progress func(BackupProgress)
}

// BackupProgress reports a running stream backup.
type BackupProgress struct {
	// File is the stream being read, BytesRead how much of it so far.
	File      string
	BytesRead uint64
	// TotalBytesRead is over every stream of the backup so far: the
	// finished ones and the current one.
	TotalBytesRead uint64
	Stats          WriteStats
}

// BackupResult describes a finished stream backup.
type BackupResult struct {
	SnapshotID ID
	Snapshot   *Snapshot
	Stats      WriteStats
	// Sizes is each stream's plaintext length, by Name.
	Sizes map[string]uint64
}

// BackupStream stores one stream as the file s.Name, like
// `restic backup --stdin --stdin-filename NAME`: the snapshot's paths are
// ["/NAME"] and its root tree leads to one file node.
func (r *Repository) BackupStream(ctx context.Context, s Stream, opts BackupOptions) (*BackupResult, error) {
	name, err := cleanStreamName(s.Name)
	if err != nil {
		return nil, err
	}
	s.Name = name
	return r.backup(ctx, []string{"/" + name}, []Stream{s}, opts)
}

// BackupStreams stores several streams as files under /dir in one snapshot
// whose paths are ["/dir"], read one after the other in order.
func (r *Repository) BackupStreams(ctx context.Context, dir string, streams []Stream, opts BackupOptions) (*BackupResult, error) {
	dir, err := cleanStreamName(dir)
	if err != nil {
		return nil, err
	}
	if len(streams) == 0 {
		return nil, errors.New("backup: no streams")
	}
	full := make([]Stream, len(streams))
	seen := map[string]bool{}
	for i, s := range streams {
		n, err := cleanStreamName(s.Name)
		if err != nil {
			return nil, err
		}
		if seen[n] {
			return nil, fmt.Errorf("backup: stream name %q used twice", n)
		}
		seen[n] = true
		full[i] = Stream{Name: dir + "/" + n, Reader: s.Reader, Close: s.Close}
	}
	return r.backup(ctx, []string{"/" + dir}, full, opts)
}

func cleanStreamName(name string) (string, error) {
	n := strings.Trim(path.Clean("/"+name), "/")
	if n == "" || n == "." {
		return "", fmt.Errorf("invalid stream file name %q", name)
	}
	return n, nil
}

// backup runs the streams through the pipeline and then writes, in this
// order, the packs, the tree packs, the index files and the snapshot: a
// crash at any point leaves at most unreferenced packs, never a snapshot
// that points at something missing.
func (r *Repository) backup(ctx context.Context, paths []string, streams []Stream, opts BackupOptions) (*BackupResult, error) {
	start := time.Now()
	if opts.Time.IsZero() {
		opts.Time = start
	}
	ctx, done, err := r.Hold(ctx, false, "the backup")
	if err != nil {
		return nil, err
	}
	defer done()
	// A failing stream cancels the others' work with its error as cause.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w, err := r.NewWriter(ctx)
	if err != nil {
		return nil, err
	}
	res := &BackupResult{Sizes: map[string]uint64{}}
	files := map[string]*Node{}
	var before uint64 // the finished streams' bytes, for TotalBytesRead
	progress := opts.Progress
	if progress != nil {
		progress = func(p BackupProgress) {
			p.TotalBytesRead = before + p.BytesRead
			opts.Progress(p)
		}
	}
	for _, s := range streams {
		content, size, err := r.saveStream(ctx, w, s, progress)
		if err == nil && s.Close != nil {
			err = s.Close()
		}
		if err == nil && size == 0 {
			err = fmt.Errorf("%s: %w", s.Name, ErrEmptyStream)
		}
		if err != nil {
			if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
				err = fmt.Errorf("%w (%v)", err, c)
			}
			cancel(err)
			w.Abort()
			return nil, fmt.Errorf("backup of %s: %w", s.Name, err)
		}
		res.Sizes[s.Name] = size
		before += size
		files[s.Name] = r.fileNode(path.Base(s.Name), opts.Time, size, content)
	}
	root, err := r.saveTrees(ctx, w, files, opts.Time)
	if err != nil {
		w.Abort()
		return nil, err
	}
	if err := w.Flush(ctx); err != nil {
		return nil, err
	}
	res.Stats = w.Stats()
	var total uint64
	for _, n := range res.Sizes {
		total += n
	}
	sn := &Snapshot{
		Time: opts.Time, Tree: &root, Paths: paths,
		Hostname: opts.Hostname, Username: currentUser(),
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		Tags: opts.Tags, ProgramVersion: opts.ProgramVersion,
		Summary: &SnapshotSummary{
			BackupStart: start, BackupEnd: time.Now(),
			FilesNew: uint(len(streams)), DirsNew: uint(countDirs(files)),
			DataBlobs: res.Stats.DataBlobs, TreeBlobs: res.Stats.TreeBlobs,
			DataAdded: res.Stats.DataAdded, DataAddedPacked: res.Stats.DataAddedPacked,
			TotalFilesProcessed: uint(len(streams)), TotalBytesProcessed: total,
		},
	}
	id, err := r.SaveSnapshot(ctx, sn)
	if err != nil {
		return nil, err
	}
	res.SnapshotID, res.Snapshot = id, sn
	return res, nil
}

func (r *Repository) fileNode(name string, t time.Time, size uint64, content []ID) *Node {
	if content == nil {
		content = []ID{}
	}
	return &Node{
		Name: name, Type: NodeFile, Mode: 0o644,
		ModTime: t, AccessTime: t, ChangeTime: t,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		Size: size, Content: content,
	}
}

func countDirs(files map[string]*Node) int {
	dirs := map[string]bool{}
	for p := range files {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	return len(dirs)
}

// saveTrees builds the directory trees above the file nodes, deepest first,
// and returns the root tree's ID.
func (r *Repository) saveTrees(ctx context.Context, w *Writer, files map[string]*Node, t time.Time) (ID, error) {
	children := map[string][]*Node{} // dir path ("" = root) -> nodes
	dirs := map[string]bool{"": true}
	for p, n := range files {
		d := path.Dir(p)
		if d == "." {
			d = ""
		}
		children[d] = append(children[d], n)
		for ; d != ""; d = parentDir(d) {
			dirs[d] = true
		}
	}
	order := make([]string, 0, len(dirs))
	for d := range dirs {
		order = append(order, d)
	}
	// Deepest first, so every subtree exists before its parent is encoded;
	// the root (depth 0) comes last.
	depth := func(d string) int {
		if d == "" {
			return 0
		}
		return strings.Count(d, "/") + 1
	}
	sort.Slice(order, func(i, j int) bool {
		if a, b := depth(order[i]), depth(order[j]); a != b {
			return a > b
		}
		return order[i] < order[j]
	})
	for _, d := range order {
		tree := &Tree{Nodes: children[d]}
		tree.Sort()
		buf, err := EncodeTree(tree)
		if err != nil {
			return ID{}, fmt.Errorf("tree of /%s: %w", d, err)
		}
		id, _, err := w.SaveBlob(ctx, TreeBlob, buf)
		if err != nil {
			return ID{}, fmt.Errorf("save tree of /%s: %w", d, err)
		}
		if d == "" {
			return id, nil
		}
		sub := id
		parent := parentDir(d)
		children[parent] = append(children[parent], &Node{
			Name: path.Base(d), Type: NodeDir, Mode: fs.ModeDir | 0o755,
			ModTime: t, AccessTime: t, ChangeTime: t,
			UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
			Subtree: &sub,
		})
	}
	return ID{}, errors.New("internal error: no root tree")
}

func parentDir(d string) string {
	p := path.Dir(d)
	if p == "." {
		return ""
	}
	return p
}

// saveStream cuts one stream into chunks on this goroutine and stores them
// on Options.Workers goroutines. The chunk pool bounds memory: the reader
// blocks until a worker has stored a chunk and released its buffer.
func (r *Repository) saveStream(ctx context.Context, w *Writer, s Stream, progress func(BackupProgress)) ([]ID, uint64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type job struct {
		seq   int
		chunk chunker.Chunk
	}
	workers := r.opts.Workers
	// One chunk buffer per worker and one the chunker fills meanwhile: a
	// buffer goes back as soon as its chunk is sealed. window bounds the
	// chunks cut but not yet committed, and so the sealed blobs waiting
	// in the reorder buffer, without holding their 8 MiB chunk buffers.
	pool := chunker.NewPool(workers + 1)
	window := make(chan struct{}, workers+2)
	jobs := make(chan job, workers)
	var (
		mu       sync.Mutex
		content  []ID
		firstErr error
		read     atomic.Uint64
		wg       sync.WaitGroup
	)
	setErr := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	// Blobs are sealed out of order on the workers but committed to packs
	// in stream order, so a restore finds neighbouring chunks next to each
	// other. The chunk pool bounds how far ahead of the slowest worker the
	// others can get, and so the size of the reorder buffer.
	var (
		orderMu sync.Mutex
		ready   = map[int]sealedBlob{}
		next    int
	)
	commitInOrder := func(seq int, sb sealedBlob) error {
		orderMu.Lock()
		defer orderMu.Unlock()
		ready[seq] = sb
		for {
			sb, ok := ready[next]
			if !ok {
				return nil
			}
			delete(ready, next)
			next++
			<-window
			if err := w.commit(ctx, sb); err != nil {
				return err
			}
		}
	}
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				sb, err := w.prepare(DataBlob, j.chunk.Data)
				j.chunk.Release()
				if err == nil {
					err = commitInOrder(j.seq, sb)
				}
				if err != nil {
					setErr(err)
					continue
				}
				mu.Lock()
				content[j.seq] = sb.h.ID
				mu.Unlock()
				if progress != nil {
					progress(BackupProgress{File: s.Name, BytesRead: read.Load(), Stats: w.Stats()})
				}
			}
		}()
	}
	ch := chunker.New(s.Reader, r.cfg.ChunkerPolynomial, pool)
	seq := 0
	for {
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		c, err := ch.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			setErr(err)
			break
		}
		read.Add(uint64(len(c.Data)))
		mu.Lock()
		content = append(content, ID{})
		mu.Unlock()
		select {
		case jobs <- job{seq: seq, chunk: c}:
			seq++
		case <-ctx.Done():
			c.Release()
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	return content, read.Load(), nil
}
