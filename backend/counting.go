package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// Counts is what a Counting backend has seen. Each field maps to requests
// an object store bills: on Cloudflare R2, Saves and ListPages are class A
// operations, Loads and Stats class B, Removes are free.
type Counts struct {
	// Saves counts Save calls (PUT; an object above the S3 backend's
	// single-PUT limit takes several multipart requests but counts once).
	Saves int64 `json:"saves"`
	// Loads counts Load calls (ranged GET), re-opens of a resumed read
	// included.
	Loads int64 `json:"loads"`
	// Stats counts Stat calls (HEAD).
	Stats int64 `json:"stats"`
	// Lists counts List calls.
	Lists int64 `json:"lists"`
	// ListPages counts LIST requests: one per page for backends that
	// report pages (PageLister, like S3), one per call for the others.
	ListPages int64 `json:"list_pages"`
	// Removes counts Remove calls (DELETE).
	Removes int64 `json:"removes"`
	// RetentionExtends counts ExtendRetention calls (one
	// PutObjectRetention each: S3 has no batch form). They are writes, R2
	// class A operations. Reading a retention (RetainUntil) is a HEAD and
	// counts in Stats.
	RetentionExtends int64 `json:"retention_extends"`
	// Errors counts calls of any kind that returned an error.
	Errors int64 `json:"errors"`
	// Retries counts attempts repeated by a Retry backend above, when its
	// Report is wired to ReportRetry.
	Retries int64 `json:"retries"`
	// BytesUp counts bytes read from Save sources, so a retried upload
	// counts its bytes each time they are sent.
	BytesUp int64 `json:"bytes_up"`
	// BytesDown counts bytes read from Load readers.
	BytesDown int64 `json:"bytes_down"`
	// SaveErrors ... RemoveErrors split Errors by operation: the requests
	// of each kind that failed (a failed List counts once, on the page
	// request that failed).
	SaveErrors   int64 `json:"save_errors,omitempty"`
	LoadErrors   int64 `json:"load_errors,omitempty"`
	StatErrors   int64 `json:"stat_errors,omitempty"`
	ListErrors   int64 `json:"list_errors,omitempty"`
	RemoveErrors int64 `json:"remove_errors,omitempty"`
	// RetentionExtendErrors counts the retention extensions that failed.
	RetentionExtendErrors int64 `json:"retention_extend_errors,omitempty"`
}

// Sub returns c minus earlier: the requests made in between.
func (c Counts) Sub(earlier Counts) Counts {
	return Counts{
		Saves: c.Saves - earlier.Saves, Loads: c.Loads - earlier.Loads, Stats: c.Stats - earlier.Stats,
		Lists: c.Lists - earlier.Lists, ListPages: c.ListPages - earlier.ListPages, Removes: c.Removes - earlier.Removes,
		RetentionExtends: c.RetentionExtends - earlier.RetentionExtends,
		Errors:           c.Errors - earlier.Errors, Retries: c.Retries - earlier.Retries,
		BytesUp: c.BytesUp - earlier.BytesUp, BytesDown: c.BytesDown - earlier.BytesDown,
		SaveErrors: c.SaveErrors - earlier.SaveErrors, LoadErrors: c.LoadErrors - earlier.LoadErrors,
		StatErrors: c.StatErrors - earlier.StatErrors, ListErrors: c.ListErrors - earlier.ListErrors,
		RemoveErrors:          c.RemoveErrors - earlier.RemoveErrors,
		RetentionExtendErrors: c.RetentionExtendErrors - earlier.RetentionExtendErrors,
	}
}

// Add returns c plus more.
func (c Counts) Add(more Counts) Counts {
	neg := Counts{}
	return c.Sub(neg.Sub(more))
}

// ClassA is the number of R2 class A operations (writes, lists and
// retention extensions).
func (c Counts) ClassA() int64 { return c.Saves + c.ListPages + c.RetentionExtends }

// ClassB is the number of R2 class B operations (reads).
func (c Counts) ClassB() int64 { return c.Loads + c.Stats }

// PageLister is implemented by backends whose listing takes one request per
// page (S3). ListPages is List that also calls page once for every page
// request it makes.
type PageLister interface {
	ListPages(ctx context.Context, t FileType, fn func(FileInfo) error, page func()) error
}

// Counting is a Backend decorator that counts operations and bytes. Place
// it below a retrying decorator, NewRetry(NewCounting(be)), so that every
// attempt is counted as the request it is; wire the Retry's Report to
// ReportRetry to count the retries themselves. It is safe for concurrent
// use.
type Counting struct {
	be Backend

	saves, loads, stats, lists, pages, removes atomic.Int64
	extends                                    atomic.Int64
	errors, retries, up, down                  atomic.Int64
	// failed requests by operation
	saveErrs, loadErrs, statErrs, listErrs, removeErrs atomic.Int64
	extendErrs                                         atomic.Int64
}

// NewCounting returns a counting decorator for be.
func NewCounting(be Backend) *Counting {
	return &Counting{be: be}
}

var _ Backend = (*Counting)(nil)

// Snapshot returns the counts so far.
func (c *Counting) Snapshot() Counts {
	return Counts{
		Saves:            c.saves.Load(),
		Loads:            c.loads.Load(),
		Stats:            c.stats.Load(),
		Lists:            c.lists.Load(),
		ListPages:        c.pages.Load(),
		Removes:          c.removes.Load(),
		RetentionExtends: c.extends.Load(),
		Errors:           c.errors.Load(),
		Retries:          c.retries.Load(),
		BytesUp:          c.up.Load(),
		BytesDown:        c.down.Load(),

		SaveErrors:            c.saveErrs.Load(),
		LoadErrors:            c.loadErrs.Load(),
		StatErrors:            c.statErrs.Load(),
		ListErrors:            c.listErrs.Load(),
		RemoveErrors:          c.removeErrs.Load(),
		RetentionExtendErrors: c.extendErrs.Load(),
	}
}

// ReportRetry counts one retry; its signature matches RetryOptions.Report.
func (c *Counting) ReportRetry(op string, h Handle, attempt int, err error) {
	c.retries.Add(1)
}

// Unwrap returns the wrapped backend.
func (c *Counting) Unwrap() Backend { return c.be }

// AtomicReplace reports whether the wrapped backend's Save replaces an
// existing file in one step.
func (c *Counting) AtomicReplace() bool { return atomicReplace(c.be) }

// atomicReplace asks be's optional AtomicReplace method.
func atomicReplace(be Backend) bool {
	r, ok := be.(interface{ AtomicReplace() bool })
	return ok && r.AtomicReplace()
}

func (c *Counting) count(err error, byOp *atomic.Int64) error {
	if err != nil {
		c.errors.Add(1)
		if byOp != nil {
			byOp.Add(1)
		}
	}
	return err
}

// Location returns the wrapped backend's location.
func (c *Counting) Location() string { return c.be.Location() }

// Close closes the wrapped backend.
func (c *Counting) Close() error { return c.be.Close() }

// Save counts one save and the bytes read from src.
func (c *Counting) Save(ctx context.Context, h Handle, src Source) error {
	c.saves.Add(1)
	return c.count(c.be.Save(ctx, h, &countingSource{Source: src, n: &c.up}), &c.saveErrs)
}

// Load counts one load; the bytes are counted as they are read.
func (c *Counting) Load(ctx context.Context, h Handle, length int, offset int64) (io.ReadCloser, error) {
	c.loads.Add(1)
	rc, err := c.be.Load(ctx, h, length, offset)
	if c.count(err, &c.loadErrs) != nil {
		return nil, err
	}
	return &countingReader{ReadCloser: rc, n: &c.down}, nil
}

// Stat counts one stat.
func (c *Counting) Stat(ctx context.Context, h Handle) (FileInfo, error) {
	c.stats.Add(1)
	fi, err := c.be.Stat(ctx, h)
	return fi, c.count(err, &c.statErrs)
}

// List counts one list and its pages.
func (c *Counting) List(ctx context.Context, t FileType, fn func(FileInfo) error) error {
	c.lists.Add(1)
	if pl, ok := c.be.(PageLister); ok {
		return c.count(pl.ListPages(ctx, t, fn, func() { c.pages.Add(1) }), &c.listErrs)
	}
	c.pages.Add(1)
	return c.count(c.be.List(ctx, t, fn), &c.listErrs)
}

// Remove counts one remove.
func (c *Counting) Remove(ctx context.Context, h Handle) error {
	c.removes.Add(1)
	return c.count(c.be.Remove(ctx, h), &c.removeErrs)
}

// RetainUntil counts one stat (a HEAD) and asks the wrapped backend.
func (c *Counting) RetainUntil(ctx context.Context, h Handle) (time.Time, error) {
	rb, ok := c.be.(retentionBackend)
	if !ok {
		return RetainUntil(ctx, c.be, h)
	}
	c.stats.Add(1)
	t, err := rb.RetainUntil(ctx, h)
	if errors.Is(err, errors.ErrUnsupported) {
		// Found out without a request per object (see the S3 backend).
		c.stats.Add(-1)
		return t, err
	}
	return t, c.count(err, &c.statErrs)
}

// ExtendRetention counts one retention extension.
func (c *Counting) ExtendRetention(ctx context.Context, h Handle, until time.Time) error {
	rb, ok := c.be.(retentionBackend)
	if !ok {
		return ExtendRetention(ctx, c.be, h, until)
	}
	c.extends.Add(1)
	return c.count(rb.ExtendRetention(ctx, h, until), &c.extendErrs)
}

// Create passes through to the wrapped backend when it is a Creator; its
// requests are not counted.
func (c *Counting) Create(ctx context.Context) error {
	if cr, ok := c.be.(Creator); ok {
		return c.count(cr.Create(ctx), nil)
	}
	return nil
}

type countingSource struct {
	Source
	n *atomic.Int64
}

func (s *countingSource) Read(p []byte) (int, error) {
	n, err := s.Source.Read(p)
	s.n.Add(int64(n))
	return n, err
}

type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// String summarises the counts on one line for logs and --verbose.
func (c Counts) String() string {
	s := fmt.Sprintf("%d PUT, %d GET, %d HEAD, %d LIST (%d pages), %d DELETE, %d retries, %d errors; %d bytes up, %d bytes down",
		c.Saves, c.Loads, c.Stats, c.Lists, c.ListPages, c.Removes, c.Retries, c.Errors, c.BytesUp, c.BytesDown)
	if c.RetentionExtends > 0 {
		s += fmt.Sprintf("; %d retention extensions", c.RetentionExtends)
	}
	return s
}
