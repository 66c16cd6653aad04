package s3

import (
	"errors"
	"net/http"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/scalr-platform/scalr-backup/backend"
)

// What no retry can fix is permanent: denied access, a bad request, a
// full or over-quota store; throttling, timeouts and server errors are not.
func TestWrapClassifies(t *testing.T) {
	for _, tc := range []struct {
		status    int
		code      string
		permanent bool
	}{
		{http.StatusForbidden, "AccessDenied", true},
		{http.StatusBadRequest, "InvalidBucketName", true},
		{http.StatusNotFound, "NoSuchBucket", true},
		{http.StatusInsufficientStorage, "InsufficientStorage", true}, // versitygw on a full disk
		{http.StatusInsufficientStorage, "XMinioStorageFull", true},
		{http.StatusForbidden, "QuotaExceeded", true},
		{http.StatusInternalServerError, "InternalError", false},
		{http.StatusServiceUnavailable, "SlowDown", false},
		{http.StatusServiceUnavailable, "ServiceUnavailable", false},
		{http.StatusTooManyRequests, "SlowDown", false},
		{http.StatusRequestTimeout, "RequestTimeout", false},
		{http.StatusBadGateway, "", false},
	} {
		err := wrap("save", "b/data/00/x", minio.ErrorResponse{StatusCode: tc.status, Code: tc.code, Message: "test"})
		if got := backend.IsPermanent(err); got != tc.permanent {
			t.Errorf("HTTP %d %s: permanent %v, want %v (%v)", tc.status, tc.code, got, tc.permanent, err)
		}
		var e *Error
		if !errors.As(err, &e) || e.Status != tc.status {
			t.Errorf("HTTP %d %s: %v does not carry the status", tc.status, tc.code, err)
		}
	}
}
