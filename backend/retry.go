package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"time"
)

// RetryOptions bounds the retries of NewRetry. Zero fields take the
// defaults shown.
type RetryOptions struct {
	// MaxAttempts is the most times one operation is tried (10).
	MaxAttempts int
	// MaxElapsed bounds the time one operation may spend, waits included
	// (5 minutes). No new attempt starts once it would be exceeded; an
	// attempt already running is bounded by the caller's context and the
	// backend's own timeouts.
	MaxElapsed time.Duration
	// InitialDelay is the wait before the second attempt (500ms); each
	// further wait doubles, up to MaxDelay (30s). Every wait is drawn at
	// random from [d/2, d) so that parallel uploaders spread out.
	InitialDelay time.Duration
	MaxDelay     time.Duration
	// Report, if set, is called after each failed attempt that will be
	// retried, with the operation ("save", "load", "stat", "list",
	// "remove", "create", "extend retention"), the file, the attempt number (from 1) and the
	// attempt's error. It must be safe for concurrent use.
	Report func(op string, h Handle, attempt int, err error)
	// Log, if set, is told of every retry before it happens: the
	// operation, the file, the attempt that failed, how long the retry
	// waits and the error. The CLI prints it (a retrying command is never
	// silent); it must be safe for concurrent use.
	Log func(RetryEvent)
}

// RetryEvent is one retry, as RetryOptions.Log receives it.
type RetryEvent struct {
	// Op is the operation: save, load, stat, list, remove or create.
	Op string
	// Handle is the file (only its Type for list).
	Handle Handle
	// Attempt is the number of the attempt that failed, from 1.
	Attempt int
	// Delay is the wait before the next attempt (0 when a load that
	// failed mid-read re-opens the rest of its range at once).
	Delay time.Duration
	// Err is the failed attempt's error.
	Err error
}

// Object is the file as the storage names it ("config",
// "data/1a/1a2b…", "snapshots/…"), or the folder of a listing ("index/").
func (e RetryEvent) Object() string {
	if e.Handle.Name == "" && e.Handle.Type != ConfigFile {
		return string(e.Handle.Type) + "/"
	}
	return e.Handle.String()
}

// String is one log line's text: "load data/1a/1a2b… failed (attempt 2):
// HTTP 503 …; retrying in 1.2s".
func (e RetryEvent) String() string {
	next := "retrying in " + e.Delay.Round(time.Millisecond).String()
	if e.Delay == 0 {
		next = "retrying at once"
	}
	return fmt.Sprintf("%s %s failed (attempt %d): %v; %s", e.Op, e.Object(), e.Attempt, e.Err, next)
}

func (o RetryOptions) withDefaults() RetryOptions {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.MaxElapsed <= 0 {
		o.MaxElapsed = 5 * time.Minute
	}
	if o.InitialDelay <= 0 {
		o.InitialDelay = 500 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 30 * time.Second
	}
	if o.MaxDelay < o.InitialDelay {
		o.MaxDelay = o.InitialDelay
	}
	return o
}

// NewRetry returns be with every operation retried, with exponential
// backoff and jitter, while it fails with an error that retrying may fix.
//
// An error is retried unless it is permanent (see IsPermanent: a
// PermanentError, ErrNotExist, or a cause no retry can fix, see
// Unfixable: permission denied, read-only file system, no space left, …),
// says a file exists (fs.ErrExist) or the caller's context is done. Context
// errors from inside the backend (a request timeout) are retried while the
// caller's context is alive. Backends decide what is permanent: the S3
// backend marks 4xx answers (denied access, missing object, bad range,
// bad digest) permanent and leaves 5xx, 429/SlowDown, resets, timeouts and
// truncated bodies transient.
//
// Save is retried by rewinding the source, never by buffering it. Load
// retries the open and also resumes a body that fails mid-read: the reader
// it returns re-opens the file at the first byte not yet delivered (stored
// files never change, so the pieces fit), within the same bounds. A List
// that fails part-way is restarted and skips names fn already saw. A
// Remove whose earlier attempt may have succeeded treats "not there" on a
// later attempt as success.
//
// The error after the last attempt names the operation, the file and the
// number of attempts, and wraps the last attempt's error (keeping, for S3,
// its HTTP status). A permanent error on the first attempt is returned as
// is.
//
// Intended stacking: NewRetry(NewCounting(be)), so that the counter sees
// every real request, retries included.
func NewRetry(be Backend, opts RetryOptions) Backend {
	return &retryBackend{be: be, opts: opts.withDefaults()}
}

type retryBackend struct {
	be   Backend
	opts RetryOptions
}

// Unwrap returns the wrapped backend.
func (r *retryBackend) Unwrap() Backend { return r.be }

// AtomicReplace reports whether the wrapped backend's Save replaces an
// existing file in one step.
func (r *retryBackend) AtomicReplace() bool { return atomicReplace(r.be) }

func (r *retryBackend) Location() string { return r.be.Location() }
func (r *retryBackend) Close() error     { return r.be.Close() }

// retryable reports whether an attempt that failed with err may be
// repeated. ctx is the caller's context.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var p *PermanentError
	return !errors.As(err, &p) && !errors.Is(err, ErrNotExist) && !errors.Is(err, fs.ErrExist) && !Unfixable(err)
}

// delay is the randomized wait after the given failed attempt.
func (r *retryBackend) delay(attempt int) time.Duration {
	d := r.opts.InitialDelay
	for i := 1; i < attempt && d < r.opts.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, r.opts.MaxDelay)
	half := d / 2
	return half + rand.N(d-half+1)
}

// retry runs fn until it succeeds, fails for good or the bounds are hit.
// Attempts are numbered from first (above 1 when a Load resumes) and stop
// at MaxAttempts in total; the time budget starts with this call.
func (r *retryBackend) retry(ctx context.Context, op string, h Handle, first int, fn func(attempt int) error) error {
	start := time.Now()
	for attempt := first; ; attempt++ {
		err := fn(attempt)
		if err == nil {
			return nil
		}
		if !retryable(ctx, err) {
			if attempt == 1 {
				return err
			}
			return r.giveUp(op, h, attempt, start, err)
		}
		if attempt >= r.opts.MaxAttempts {
			return r.giveUp(op, h, attempt, start, err)
		}
		wait := r.delay(attempt - first + 1)
		if time.Since(start)+wait > r.opts.MaxElapsed {
			return r.giveUp(op, h, attempt, start, err)
		}
		if r.opts.Report != nil {
			r.opts.Report(op, h, attempt, err)
		}
		if r.opts.Log != nil {
			r.opts.Log(RetryEvent{Op: op, Handle: h, Attempt: attempt, Delay: wait, Err: err})
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%s %v: %w while waiting to retry after %s; last error: %w",
				op, h, ctx.Err(), attempts(attempt), err)
		case <-timer.C:
		}
	}
}

func (r *retryBackend) giveUp(op string, h Handle, attempt int, start time.Time, err error) error {
	return fmt.Errorf("%s %v failed after %s in %v: %w",
		op, h, attempts(attempt), time.Since(start).Round(time.Millisecond), err)
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

func (r *retryBackend) Save(ctx context.Context, h Handle, src Source) error {
	return r.retry(ctx, "save", h, 1, func(attempt int) error {
		if attempt > 1 {
			if err := src.Rewind(); err != nil {
				return Permanent(fmt.Errorf("save %v: rewind source: %w", h, err))
			}
		}
		return r.be.Save(ctx, h, src)
	})
}

func (r *retryBackend) Load(ctx context.Context, h Handle, length int, offset int64) (io.ReadCloser, error) {
	rd := &resumingReader{r: r, ctx: ctx, h: h, length: int64(length), offset: offset}
	if err := rd.open(1); err != nil {
		return nil, err
	}
	return rd, nil
}

func (r *retryBackend) Stat(ctx context.Context, h Handle) (FileInfo, error) {
	var fi FileInfo
	err := r.retry(ctx, "stat", h, 1, func(int) error {
		var err error
		fi, err = r.be.Stat(ctx, h)
		return err
	})
	return fi, err
}

// callbackError marks an error that came from List's fn, which is the
// caller's and never retried.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

func (r *retryBackend) List(ctx context.Context, t FileType, fn func(FileInfo) error) error {
	seen := make(map[string]struct{})
	var fnErr *callbackError
	err := r.retry(ctx, "list", Handle{Type: t}, 1, func(int) error {
		return r.be.List(ctx, t, func(fi FileInfo) error {
			if _, ok := seen[fi.Name]; ok {
				return nil
			}
			seen[fi.Name] = struct{}{}
			if err := fn(fi); err != nil {
				fnErr = &callbackError{err}
				return Permanent(fnErr)
			}
			return nil
		})
	})
	if fnErr != nil && errors.Is(err, fnErr) {
		return fnErr.err
	}
	return err
}

func (r *retryBackend) Remove(ctx context.Context, h Handle) error {
	return r.retry(ctx, "remove", h, 1, func(attempt int) error {
		err := r.be.Remove(ctx, h)
		if attempt > 1 && errors.Is(err, ErrNotExist) {
			// An earlier attempt failed after the file was gone.
			return nil
		}
		return err
	})
}

// RetainUntil asks the wrapped backend with retries.
func (r *retryBackend) RetainUntil(ctx context.Context, h Handle) (time.Time, error) {
	var t time.Time
	err := r.retry(ctx, "stat", h, 1, func(int) error {
		var err error
		t, err = RetainUntil(ctx, r.be, h)
		if errors.Is(err, errors.ErrUnsupported) {
			return Permanent(err)
		}
		return err
	})
	return t, err
}

// ExtendRetention extends with retries (setting the same date twice is
// harmless).
func (r *retryBackend) ExtendRetention(ctx context.Context, h Handle, until time.Time) error {
	return r.retry(ctx, "extend retention", h, 1, func(int) error {
		err := ExtendRetention(ctx, r.be, h, until)
		if errors.Is(err, errors.ErrUnsupported) {
			return Permanent(err)
		}
		return err
	})
}

// Create prepares the location with retries when the wrapped backend is a
// Creator, and does nothing otherwise.
func (r *retryBackend) Create(ctx context.Context) error {
	c, ok := r.be.(Creator)
	if !ok {
		return nil
	}
	return r.retry(ctx, "create", Handle{Type: ConfigFile}, 1, func(int) error {
		return c.Create(ctx)
	})
}

// resumingReader reads a loaded range and, when the body fails mid-way
// with a retryable error, re-opens the rest of the range.
type resumingReader struct {
	r      *retryBackend
	ctx    context.Context
	h      Handle
	length int64 // 0: to the end
	offset int64
	done   int64 // bytes delivered
	tries  int   // opens so far
	rc     io.ReadCloser
	err    error // sticky
}

// open opens the undelivered part of the range, counting attempts on from
// the opens before it.
func (rd *resumingReader) open(first int) error {
	return rd.r.retry(rd.ctx, "load", rd.h, first, func(attempt int) error {
		rd.tries = attempt
		length := int(rd.length) // 0 (to the end) or invalid: as given
		if rd.length > 0 {
			length = int(rd.length - rd.done)
		}
		rc, err := rd.r.be.Load(rd.ctx, rd.h, length, rd.offset+rd.done)
		if err != nil {
			return err
		}
		rd.rc = rc
		return nil
	})
}

func (rd *resumingReader) Read(p []byte) (int, error) {
	if rd.err != nil {
		return 0, rd.err
	}
	for {
		n, err := rd.rc.Read(p)
		rd.done += int64(n)
		if err == nil || err == io.EOF {
			return n, err
		}
		complete := rd.length > 0 && rd.done >= rd.length
		if complete || !retryable(rd.ctx, err) || rd.tries >= rd.r.opts.MaxAttempts {
			rd.err = fmt.Errorf("load %v: read at byte %d: %w", rd.h, rd.offset+rd.done, err)
			if rd.tries > 1 {
				rd.err = fmt.Errorf("load %v failed after %s: %w", rd.h, attempts(rd.tries), rd.err)
			}
			return n, rd.err
		}
		if rd.r.opts.Report != nil {
			rd.r.opts.Report("load", rd.h, rd.tries, err)
		}
		if rd.r.opts.Log != nil {
			rd.r.opts.Log(RetryEvent{Op: "load", Handle: rd.h, Attempt: rd.tries,
				Err: fmt.Errorf("read at byte %d: %w", rd.offset+rd.done, err)})
		}
		_ = rd.rc.Close()
		rd.rc = io.NopCloser(eofReader{})
		if oerr := rd.open(rd.tries + 1); oerr != nil {
			rd.err = oerr
			return n, oerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (rd *resumingReader) Close() error {
	return rd.rc.Close()
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
