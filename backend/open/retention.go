package open

import (
	"context"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// RetainUntil forwards to the retrying, counting stack (see
// backend.RetainUntil), which the embedded interface does not promote.
func (o *Opened) RetainUntil(ctx context.Context, h backend.Handle) (time.Time, error) {
	return backend.RetainUntil(ctx, o.Backend, h)
}

// ExtendRetention forwards like RetainUntil.
func (o *Opened) ExtendRetention(ctx context.Context, h backend.Handle, until time.Time) error {
	return backend.ExtendRetention(ctx, o.Backend, h, until)
}
