package backend

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrDeleteRefused is wrapped by every error of a Remove that the storage
// refused for a reason no retry fixes soon: the object is under an S3
// Object Lock retention, a bucket lock rule (Cloudflare R2) protects its
// prefix, or the credentials may not delete. Callers that remove what is no
// longer needed (forget, prune) defer such a deletion instead of failing:
// the file stays, the repository stays consistent, and a later run tries
// again.
var ErrDeleteRefused = errors.New("the storage refuses to delete it")

// DeleteRefusedError is a refused Remove. It is permanent (never retried:
// a lock lasts days, far beyond any retry budget) and matches
// ErrDeleteRefused.
type DeleteRefusedError struct {
	Handle Handle
	// Until is when the object's retention ends, when the storage says
	// (S3 Object Lock); zero when it is unknown (bucket lock rules,
	// missing permission).
	Until time.Time
	// Err is the storage's answer.
	Err error
}

func (e *DeleteRefusedError) Error() string {
	s := fmt.Sprintf("remove %v: %v", e.Handle, ErrDeleteRefused)
	if !e.Until.IsZero() {
		s += " until " + e.Until.UTC().Format(time.RFC3339)
	}
	return s + ": " + e.Err.Error()
}

// Unwrap gives the storage's answer and ErrDeleteRefused.
func (e *DeleteRefusedError) Unwrap() []error { return []error{e.Err, ErrDeleteRefused} }

// DeleteRefused returns the permanent error of a refused Remove of h.
func DeleteRefused(h Handle, until time.Time, err error) error {
	return Permanent(&DeleteRefusedError{Handle: h, Until: until, Err: err})
}

// RefusedUntil returns when the retention that made err refuse a deletion
// ends (zero: unknown), and whether err is a refused deletion at all.
func RefusedUntil(err error) (time.Time, bool) {
	var d *DeleteRefusedError
	if errors.As(err, &d) {
		return d.Until, true
	}
	return time.Time{}, errors.Is(err, ErrDeleteRefused)
}

// retentionBackend is the optional part of a backend that knows about
// object retention (S3 Object Lock). Decorators forward it; a backend
// without it answers errors.ErrUnsupported.
type retentionBackend interface {
	RetainUntil(ctx context.Context, h Handle) (time.Time, error)
	ExtendRetention(ctx context.Context, h Handle, until time.Time) error
}

// RetainUntil asks be when h's retention ends: zero when h has none.
// It wraps errors.ErrUnsupported when be's storage has no per-object
// retention at all (a local folder, a bucket without Object Lock), so a
// caller can stop asking.
func RetainUntil(ctx context.Context, be Backend, h Handle) (time.Time, error) {
	if rb, ok := be.(retentionBackend); ok {
		return rb.RetainUntil(ctx, h)
	}
	return time.Time{}, fmt.Errorf("retention of %v: %w", h, errors.ErrUnsupported)
}

// ExtendRetention moves h's retention end to until (never earlier: the
// storage refuses to shorten it). It wraps errors.ErrUnsupported like
// RetainUntil.
func ExtendRetention(ctx context.Context, be Backend, h Handle, until time.Time) error {
	if rb, ok := be.(retentionBackend); ok {
		return rb.ExtendRetention(ctx, h, until)
	}
	return fmt.Errorf("extend retention of %v: %w", h, errors.ErrUnsupported)
}

// RetentionPeriod is implemented by backends configured to lock what they
// write (s3.retention); the nightly pass extends by this period.
func RetentionPeriod(be Backend) time.Duration {
	for be != nil {
		if p, ok := be.(interface{ RetentionPeriod() time.Duration }); ok {
			return p.RetentionPeriod()
		}
		u, ok := be.(interface{ Unwrap() Backend })
		if !ok {
			return 0
		}
		be = u.Unwrap()
	}
	return 0
}
