package backend

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"syscall"
)

// unfixableErrnos are operating-system errors that no retry can fix: the
// storage refuses the operation (permissions, a read-only file system), is
// full, or the path itself is wrong. Waiting does not change any of them
// within a retry budget, so an operation failing with one fails at once,
// naming the cause, instead of spending minutes on retries.
var unfixableErrnos = []syscall.Errno{
	syscall.EACCES,       // permission denied
	syscall.EPERM,        // operation not permitted
	syscall.EROFS,        // read-only file system
	syscall.ENOSPC,       // no space left on device
	syscall.EDQUOT,       // disk quota exceeded
	syscall.EFBIG,        // file too large
	syscall.ENOTDIR,      // a file where a folder should be
	syscall.EISDIR,       // a folder where a file should be
	syscall.ENAMETOOLONG, // file name too long
	syscall.ELOOP,        // too many symbolic links
}

// Unfixable reports whether err has a cause that retrying cannot fix,
// whatever the backend that returned it: one of the operating-system
// errors above (permission denied, read-only file system, no space left,
// quota exceeded, a wrong path), a host name that does not exist, or a
// TLS certificate that does not verify. It does not look at
// PermanentError; IsPermanent covers both.
func Unfixable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, fs.ErrPermission) {
		return true
	}
	for _, e := range unfixableErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.IsNotFound {
		return true // the name does not exist; a DNS outage is a timeout instead
	}
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &invalid)
}
