package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/scalr-platform/scalr-backup/backend"
)

// retainUntilHeaderName is where HEAD reports an object version's Object
// Lock retention. (versitygw 1.8.0 answers GetObjectRetention with an XML
// root element minio-go does not accept, so HEAD is used throughout; it is
// a class B request where GetObjectRetention is too.)
const retainUntilHeaderName = "X-Amz-Object-Lock-Retain-Until-Date"

// RetentionPeriod is the configured s3.retention (0: off).
func (b *Backend) RetentionPeriod() time.Duration { return b.cfg.Retention }

func (b *Backend) retentionMode() minio.RetentionMode {
	if b.cfg.RetentionMode == "COMPLIANCE" {
		return minio.Compliance
	}
	return minio.Governance
}

// retainUntil is the retention end of an object written or extended at
// now. S3 keeps whole seconds; rounding up never shortens the period.
func (b *Backend) retainUntil(now time.Time) time.Time {
	return now.Add(b.cfg.Retention).Add(time.Second - 1).Truncate(time.Second).UTC()
}

// retainUntilHeader reads the retention end from a HEAD answer (zero when
// the object has none).
func retainUntilHeader(info minio.ObjectInfo) time.Time {
	v := info.Headers.Get(retainUntilHeaderName)
	if v == "" {
		v = info.Metadata.Get(retainUntilHeaderName)
	}
	if v == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// refused reports whether a DELETE was refused for a reason that lasts:
// Object Lock (S3 and versitygw answer 403 AccessDenied, some services a
// code of their own), an R2 bucket lock rule, or credentials that may read
// but not delete (403).
func refused(err error) bool {
	var r minio.ErrorResponse
	if !errors.As(err, &r) {
		return false
	}
	if r.StatusCode == http.StatusForbidden {
		return true
	}
	c := strings.ToLower(r.Code)
	return strings.Contains(c, "lock") || strings.Contains(c, "retention") || c == "methodnotallowed"
}

// checkObjectLock makes sure an existing bucket can hold retained objects:
// with s3.retention, an existing bucket without Object Lock is an error
// (it cannot be turned on later), said before anything is written.
func (b *Backend) checkObjectLock(ctx context.Context) error {
	if b.cfg.Retention <= 0 {
		return nil
	}
	enabled, known, err := b.objectLockEnabled(ctx)
	if err != nil {
		return err
	}
	if known && !enabled {
		return backend.Permanent(fmt.Errorf("s3: bucket %s exists without Object Lock, which s3.retention needs and which can only be enabled when a bucket is created: use a new bucket (init makes it with Object Lock) or leave s3.retention off", b.cfg.Bucket))
	}
	return nil
}

// objectLockEnabled asks for the bucket's Object Lock configuration. A
// bucket without one, or a service without the call (R2 answers 501), has
// no Object Lock. A key that may not read the configuration (a restricted
// host key) leaves it unknown: known is false then, and the caller goes
// on without relying on it.
func (b *Backend) objectLockEnabled(ctx context.Context) (enabled, known bool, err error) {
	var status string
	err = b.with(ctx, func() (err error) {
		status, _, _, _, err = b.client.GetObjectLockConfig(ctx, b.cfg.Bucket)
		return err
	})
	if err != nil {
		var r minio.ErrorResponse
		switch {
		case !errors.As(err, &r) || r.Code == "NoSuchBucket":
		case r.StatusCode == http.StatusForbidden || r.Code == "AccessDenied":
			return false, false, nil
		case !isAuth(r.StatusCode, r.Code) && (r.StatusCode == http.StatusNotFound || r.StatusCode == http.StatusNotImplemented ||
			r.StatusCode == http.StatusBadRequest || strings.Contains(strings.ToLower(r.Code), "objectlock")):
			return false, true, nil
		}
		return false, false, wrap("check object lock of bucket", b.cfg.Bucket, err)
	}
	return status == "Enabled", true, nil
}

// lockKnown caches whether the bucket has Object Lock, once known.
type lockKnown struct {
	known, enabled bool
}

// RetainUntil reports when h's retention ends (zero: none). On a bucket
// without Object Lock it wraps errors.ErrUnsupported after one request for
// the whole backend, so callers need not ask per object.
func (b *Backend) RetainUntil(ctx context.Context, h backend.Handle) (time.Time, error) {
	if err := checkHandle(h); err != nil {
		return time.Time{}, backend.Permanent(fmt.Errorf("s3 retention: %w", err))
	}
	b.lockMu.Lock()
	lk := b.lock
	b.lockMu.Unlock()
	if !lk.known {
		enabled, _, err := b.objectLockEnabled(ctx)
		if err != nil {
			return time.Time{}, err
		}
		lk = lockKnown{known: true, enabled: enabled}
		b.lockMu.Lock()
		b.lock = lk
		b.lockMu.Unlock()
	}
	if !lk.enabled {
		return time.Time{}, fmt.Errorf("s3 retention of %s: bucket %s has no Object Lock: %w", b.key(h), b.cfg.Bucket, errors.ErrUnsupported)
	}
	key := b.key(h)
	var info minio.ObjectInfo
	err := b.with(ctx, func() (err error) {
		info, err = b.client.StatObject(ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
		return err
	})
	if err != nil {
		return time.Time{}, wrap("stat", key, err)
	}
	return retainUntilHeader(info), nil
}

// ExtendRetention sets the retention of h's current version to until in
// the configured mode (one PutObjectRetention request; S3 has no call for
// several objects). The storage refuses to shorten a retention.
func (b *Backend) ExtendRetention(ctx context.Context, h backend.Handle, until time.Time) error {
	if err := checkHandle(h); err != nil {
		return backend.Permanent(fmt.Errorf("s3 extend retention: %w", err))
	}
	key := b.key(h)
	mode := b.retentionMode()
	until = until.Add(time.Second - 1).Truncate(time.Second).UTC()
	err := b.with(ctx, func() error {
		return b.client.PutObjectRetention(ctx, b.cfg.Bucket, key, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until})
	})
	if err != nil {
		return wrap("extend retention", key, err)
	}
	return nil
}
