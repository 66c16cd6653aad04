// Package s3 stores a restic repository in an S3-compatible object store
// (AWS S3, Cloudflare R2, Backblaze B2, MinIO, versitygw) through minio-go.
//
// Objects are laid out as restic does on S3: PREFIX/config, PREFIX/keys/ID,
// PREFIX/snapshots/ID, PREFIX/index/ID, PREFIX/locks/ID and
// PREFIX/data/XX/ID, where XX is the ID's first two hex digits (restic's
// default layout, which its S3 backend uses too).
//
// The backend makes one attempt per operation: minio-go's own retries are
// turned off so that backend.NewRetry owns retrying and a counting
// decorator below it sees every request.
package s3

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/scalr-platform/scalr-backup/backend"
)

const (
	// singlePutMax is the largest object sent as one PUT. Packs (16 MiB by
	// default, at most 128 MiB plus one blob) always fit: one PUT is one
	// billed request, streams straight from the source without a buffer,
	// and carries the source's Content-MD5. S3, R2 and B2 accept single
	// PUTs up to 5 GB.
	singlePutMax = 512 << 20
	// partSize is the multipart part size above singlePutMax; minio-go
	// buffers one part at a time.
	partSize = 64 << 20
	// listPage is the number of keys asked for per LIST request (the S3
	// maximum).
	listPage = 1000
)

// Backend is a repository in an S3 bucket. It is safe for concurrent use.
type Backend struct {
	cfg    Config
	client *minio.Client
	tr     *http.Transport
	sem    chan struct{}

	// lock is whether the bucket has Object Lock, once asked (see
	// RetainUntil).
	lockMu sync.Mutex
	lock   lockKnown

	// Tunables, fixed by Open; tests lower them.
	singlePutMax int64
	partSize     uint64
	pageSize     int
}

var (
	_ backend.Backend    = (*Backend)(nil)
	_ backend.Creator    = (*Backend)(nil)
	_ backend.PageLister = (*Backend)(nil)
)

// Open returns a backend for cfg. It checks the configuration but makes no
// request; a missing bucket shows up on first use (errors wrap
// backend.ErrNoRepository) or is made by Create.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Connections <= 0 {
		cfg.Connections = DefaultConnections
	}
	if cfg.BucketLookup == "" {
		cfg.BucketLookup = "auto"
	}
	lookup := map[string]minio.BucketLookupType{
		"auto": minio.BucketLookupAuto,
		"dns":  minio.BucketLookupDNS,
		"path": minio.BucketLookupPath,
	}[cfg.BucketLookup]

	tr, err := minio.DefaultTransport(!cfg.UseHTTP)
	if err != nil {
		return nil, fmt.Errorf("s3: transport: %w", err)
	}
	tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, cfg.Connections)
	// A large PUT is answered once the server has stored it.
	tr.ResponseHeaderTimeout = 2 * time.Minute

	creds, err := cfg.credentials()
	if err != nil {
		return nil, err
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       !cfg.UseHTTP,
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    tr,
		// One attempt per call: backend.NewRetry retries (and rewinds the
		// source), so nothing is retried twice over or uncounted.
		MaxRetries: 1,
		// No trailing checksums (aws-chunked bodies with an
		// x-amz-checksum-* trailer): R2 and B2 reject them, and R2 only
		// takes CRC32C as a per-part checksum, not the full-object one
		// minio-go would send. Integrity comes from Content-MD5 instead.
		TrailingHeaders: false,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: client for %s: %w", cfg.Location(), err)
	}
	return &Backend{
		cfg:          cfg,
		client:       client,
		tr:           tr,
		sem:          make(chan struct{}, cfg.Connections),
		singlePutMax: singlePutMax,
		partSize:     partSize,
		pageSize:     listPage,
	}, nil
}

// Location returns "s3:" and the endpoint, bucket and prefix; never
// credentials.
func (b *Backend) Location() string { return b.cfg.Location() }

// AtomicReplace reports that Save replaces an existing object in one step
// (a PUT over an existing key), as restic's S3 backend assumes.
func (b *Backend) AtomicReplace() bool { return true }

// Close releases idle connections.
func (b *Backend) Close() error {
	b.tr.CloseIdleConnections()
	return nil
}

// checkHandle refuses handles that name no file, and names that would
// leave their folder once joined into a key.
func checkHandle(h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return err
	}
	if strings.Contains(h.Name, "/") || h.Name == "." || h.Name == ".." {
		return fmt.Errorf("invalid handle %v: bad name", h)
	}
	return nil
}

// key is the object name of h (checked by checkHandle).
func (b *Backend) key(h backend.Handle) string {
	return path.Join(b.cfg.Prefix, h.String())
}

// dir is the key prefix, ending in "/", under which files of type t live.
func (b *Backend) dir(t backend.FileType) string {
	return path.Join(b.cfg.Prefix, string(t)) + "/"
}

func (b *Backend) acquire(ctx context.Context) error {
	select {
	case b.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Backend) release() { <-b.sem }

// with runs fn holding one of the Connections.
func (b *Backend) with(ctx context.Context, fn func() error) error {
	if err := b.acquire(ctx); err != nil {
		return err
	}
	defer b.release()
	return fn()
}

// Create makes the bucket when it does not exist. A key that may not check
// buckets (AccessDenied, common with R2 tokens scoped to one bucket) is
// taken to mean the bucket exists.
func (b *Backend) Create(ctx context.Context) error {
	var found bool
	err := b.with(ctx, func() (err error) {
		found, err = b.client.BucketExists(ctx, b.cfg.Bucket)
		return err
	})
	if err != nil {
		if code(err) != "AccessDenied" {
			return wrap("check bucket", b.cfg.Bucket, err)
		}
		// A HEAD answer has no body to tell a key that may not check
		// buckets from a wrong secret; a listing does.
		_, _, _, lerr := b.listPage(ctx, b.dir(backend.KeyFile), false, "")
		if lerr != nil && code(lerr) != "AccessDenied" {
			return lerr
		}
		return nil
	}
	if found {
		return b.checkObjectLock(ctx)
	}
	err = b.with(ctx, func() error {
		// Object Lock can only be turned on when a bucket is made (it
		// turns on versioning too).
		return b.client.MakeBucket(ctx, b.cfg.Bucket, minio.MakeBucketOptions{Region: b.cfg.Region, ObjectLocking: b.cfg.Retention > 0})
	})
	if err != nil {
		if code(err) == "BucketAlreadyOwnedByYou" {
			return b.checkObjectLock(ctx) // made concurrently
		}
		return wrap("create bucket", b.cfg.Bucket, err)
	}
	return nil
}

// Save uploads src under h. An existing object is replaced atomically (S3
// semantics). Up to singlePutMax bytes go as one streamed PUT carrying
// Content-MD5 when the source knows it; larger sources go multipart with
// a Content-MD5 per part.
func (b *Backend) Save(ctx context.Context, h backend.Handle, src backend.Source) error {
	if err := checkHandle(h); err != nil {
		return backend.Permanent(fmt.Errorf("s3 save: %w", err))
	}
	key := b.key(h)
	size := src.Length()
	if size < 0 {
		return backend.Permanent(fmt.Errorf("s3 save %s: negative source length %d", key, size))
	}
	if err := b.acquire(ctx); err != nil {
		return fmt.Errorf("s3 save %s: %w", key, err)
	}
	defer b.release()

	if size == 0 {
		var one [1]byte
		if n, _ := io.ReadFull(src, one[:]); n > 0 {
			return backend.Permanent(fmt.Errorf("s3 save %s: source has more than its length of 0 bytes", key))
		}
	}
	rd := &exactReader{src: src, size: size}
	opts := minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		// A source that knows its SHA-256 signs the payload with it
		// (below). Otherwise, over HTTPS (R2, B2, AWS): UNSIGNED-PAYLOAD,
		// no SHA-256 pass over the data; TLS guards the body, Content-MD5
		// checks it end to end. Over plain HTTP (local servers) minio-go
		// signs the body in aws-chunked pieces instead, without a trailer;
		// besides guarding the bytes, that makes a body cut short
		// (cancelled upload, dead source) detectable: versitygw stores a
		// truncated UNSIGNED-PAYLOAD body as if it were complete.
		DisableContentSha256: !b.cfg.UseHTTP,
		// Checksum and AutoChecksum stay unset: with TrailingHeaders off
		// minio-go then adds no x-amz-checksum-* headers or trailers.
	}
	if b.cfg.Retention > 0 && h.Type != backend.LockFile {
		// Locks are refreshed and removed every few minutes; a retention
		// on them would block every later command.
		opts.Mode, opts.RetainUntilDate = b.retentionMode(), b.retainUntil(time.Now())
	}
	var err error
	if size <= b.singlePutMax {
		var md5, sha string
		if sum := src.SHA256(); len(sum) == sha256.Size {
			// A digest known beforehand (a pack's name) signs the payload:
			// no SHA-256 pass while sending over HTTP, and the server
			// checks the body against it (XAmzContentSHA256Mismatch), so
			// a body cut short or changed after it was hashed (a spool
			// file gone bad) is refused.
			sha = hex.EncodeToString(sum)
			opts.DisableContentSha256 = true
		}
		if sha == "" || opts.Mode != "" {
			// Content-MD5 is the server's check of the body when no digest
			// is signed, and Object Lock requires it on a PUT with a
			// retention (AWS, B2). Beside a signed SHA-256 it would check
			// the same bytes again, for an MD5 pass over every pack: 5% of
			// a first S3 backup's CPU here.
			if sum := src.MD5(); sum != nil {
				md5 = base64.StdEncoding.EncodeToString(sum)
			}
		}
		// Core.PutObject sends exactly one PUT with our Content-MD5 and
		// reads the source once, streaming. (Client.PutObject with
		// SendContentMd5 would buffer the whole object to hash it.)
		_, err = minio.Core{Client: b.client}.PutObject(ctx, b.cfg.Bucket, key, rd, size, md5, sha, opts)
	} else {
		opts.PartSize = b.partSize
		opts.SendContentMd5 = true // per part, hashed from minio-go's part buffer
		_, err = b.client.PutObject(ctx, b.cfg.Bucket, key, rd, size, opts)
	}
	if rd.err != nil {
		// The source misbehaved; the server saw a cut-off request and
		// stored nothing.
		return fmt.Errorf("s3 save %s: %w", key, rd.err)
	}
	if err != nil {
		return wrap("save", key, err)
	}
	return nil
}

// Load opens length bytes of h from offset (length 0: to the end).
//
// The reader holds one of the Connections until it is closed, so that
// Connections bounds the requests in flight, bodies included. A caller
// must therefore not wait for a new Load while it holds Connections
// unread readers open itself: read or close them first.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64) (io.ReadCloser, error) {
	if err := checkHandle(h); err != nil {
		return nil, backend.Permanent(fmt.Errorf("s3 load: %w", err))
	}
	key := b.key(h)
	if length < 0 || offset < 0 {
		return nil, backend.Permanent(fmt.Errorf("s3 load %s: invalid range: offset %d, length %d", key, offset, length))
	}
	if err := b.acquire(ctx); err != nil {
		return nil, fmt.Errorf("s3 load %s: %w", key, err)
	}
	rc, err := b.load(ctx, key, length, offset)
	if err != nil {
		b.release()
		return nil, err
	}
	return &releasingReader{ReadCloser: rc, release: b.release}, nil
}

func (b *Backend) load(ctx context.Context, key string, length int, offset int64) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	if length > 0 {
		if err := opts.SetRange(offset, offset+int64(length)-1); err != nil {
			return nil, backend.Permanent(fmt.Errorf("s3 load %s: %w", key, err))
		}
	} else if offset > 0 {
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, backend.Permanent(fmt.Errorf("s3 load %s: %w", key, err))
		}
	}
	rc, info, hdr, err := minio.Core{Client: b.client}.GetObject(ctx, b.cfg.Bucket, key, opts)
	if err != nil {
		if code(err) == "InvalidRange" && length == 0 {
			// "bytes=SIZE-" is unsatisfiable, but reading zero bytes
			// at the very end is not an error.
			if fi, serr := b.stat(ctx, key); serr == nil && fi.Size == offset {
				return io.NopCloser(strings.NewReader("")), nil
			}
		}
		return nil, wrap("load", key, err)
	}
	switch {
	case offset > 0 && hdr.Get("Content-Range") == "":
		rc.Close()
		return nil, fmt.Errorf("s3 load %s: server ignored the range request", key)
	case length > 0 && info.Size != int64(length):
		// S3 answers a range that runs past the end with what there is.
		rc.Close()
		return nil, backend.Permanent(fmt.Errorf("s3 load %s: range %d+%d is past the end of the object (got %d bytes)",
			key, offset, length, info.Size))
	}
	return rc, nil
}

// Stat reports the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := checkHandle(h); err != nil {
		return backend.FileInfo{}, backend.Permanent(fmt.Errorf("s3 stat: %w", err))
	}
	key := b.key(h)
	if err := b.acquire(ctx); err != nil {
		return backend.FileInfo{}, fmt.Errorf("s3 stat %s: %w", key, err)
	}
	defer b.release()
	fi, err := b.stat(ctx, key)
	if err != nil {
		return backend.FileInfo{}, err
	}
	fi.Name = h.Name
	return fi, nil
}

func (b *Backend) stat(ctx context.Context, key string) (backend.FileInfo, error) {
	info, err := b.client.StatObject(ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return backend.FileInfo{}, wrap("stat", key, err)
	}
	return backend.FileInfo{Size: info.Size}, nil
}

// Remove deletes h. S3 reports success for a missing key, so Remove asks
// first (HEAD, a cheap class B request) to report a missing file as
// backend.ErrNotExist as the interface requires.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := checkHandle(h); err != nil {
		return backend.Permanent(fmt.Errorf("s3 remove: %w", err))
	}
	key := b.key(h)
	if err := b.acquire(ctx); err != nil {
		return fmt.Errorf("s3 remove %s: %w", key, err)
	}
	defer b.release()
	info, err := b.client.StatObject(ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return wrap("remove", key, err)
	}
	// On a versioned bucket (Object Lock turns versioning on) a DELETE
	// without a version only hides the object behind a delete marker: it
	// always succeeds, frees nothing and keeps the data for ever. Deleting
	// the version HEAD found removes it for good, and a locked version
	// refuses, which is what lets forget and prune defer it (see
	// backend.ErrDeleteRefused). An older version then becomes current
	// (a retried upload can leave two of a content-addressed file): it is
	// deleted too, so the file is really gone, at the cost of one more
	// HEAD on versioned buckets only. Delete markers and versions below
	// one are left: they are what rewind works from.
	for round := 0; ; round++ {
		opts := minio.RemoveObjectOptions{}
		v := info.VersionID
		if v != "" && v != "null" {
			opts.VersionID = v
		}
		if err := b.client.RemoveObject(ctx, b.cfg.Bucket, key, opts); err != nil {
			if refused(err) {
				// HEAD just succeeded with these credentials, so a
				// refusal is about deleting, not about who is asking.
				return backend.DeleteRefused(h, retainUntilHeader(info), wrap("remove", key, err))
			}
			return wrap("remove", key, err)
		}
		if opts.VersionID == "" {
			return nil
		}
		info, err = b.client.StatObject(ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
		if err != nil {
			if e := wrap("remove", key, err); errors.Is(e, backend.ErrNotExist) {
				return nil
			}
			return wrap("remove (look for an older version)", key, err)
		}
		if info.VersionID == v || round >= 16 {
			return fmt.Errorf("s3 remove %s: version %s is still there after deleting it", key, info.VersionID)
		}
	}
}

// List calls fn for every file of type t whose name is 64 hex digits.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	return b.ListPages(ctx, t, fn, nil)
}

// ListPages is List that calls page (when not nil) after each LIST
// request. Each page holds one of the Connections only while it is
// fetched, never while fn runs, so fn may use the backend.
func (b *Backend) ListPages(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error, page func()) error {
	if t == backend.ConfigFile {
		return backend.Permanent(fmt.Errorf("s3 list %q: not a listable file type", string(t)))
	}
	if err := (backend.Handle{Type: t, Name: "x"}).Valid(); err != nil {
		return backend.Permanent(fmt.Errorf("s3 list: %w", err))
	}
	dir := b.dir(t)
	recursive := t == backend.PackFile // data/XX/ID
	startAfter := ""
	for {
		infos, last, more, err := b.listPage(ctx, dir, recursive, startAfter)
		if page != nil {
			page()
		}
		if err != nil {
			return err
		}
		for _, fi := range infos {
			if err := fn(fi); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
		startAfter = last
	}
}

// listPage fetches up to pageSize keys under dir after startAfter. It
// returns the valid files among them, the last key seen and whether more
// may follow.
//
// minio-go's iterator fetches a page per request and only asks for the
// next one when the previous page is used up, so taking pageSize entries
// and stopping costs exactly one request on a server that fills its pages;
// one that returns short pages costs more requests, counted as one page.
func (b *Backend) listPage(ctx context.Context, dir string, recursive bool, startAfter string) (infos []backend.FileInfo, last string, more bool, err error) {
	if err := b.acquire(ctx); err != nil {
		return nil, "", false, fmt.Errorf("s3 list %s: %w", dir, err)
	}
	defer b.release()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	for obj := range b.client.ListObjectsIter(ctx, b.cfg.Bucket, minio.ListObjectsOptions{
		Prefix:     dir,
		Recursive:  recursive,
		StartAfter: startAfter,
		MaxKeys:    b.pageSize,
	}) {
		if obj.Err != nil {
			return nil, "", false, wrap("list", dir, obj.Err)
		}
		n++
		last = obj.Key
		if !strings.HasSuffix(obj.Key, "/") {
			if name := path.Base(obj.Key); backend.IsValidName(name) {
				infos = append(infos, backend.FileInfo{Name: name, Size: obj.Size})
			}
		}
		if n == b.pageSize {
			return infos, last, true, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, "", false, fmt.Errorf("s3 list %s: %w", dir, err)
	}
	return infos, last, false, nil
}

// exactReader passes on exactly size bytes of src and fails, before the
// last byte goes out, when src has fewer or more: a request cut short is
// never stored, so a lying source cannot leave a wrong object behind.
type exactReader struct {
	src  backend.Source
	size int64
	n    int64
	err  error
}

func (r *exactReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	rest := r.size - r.n
	if rest == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := r.src.Read(p)
	r.n += int64(n)
	switch {
	case r.n == r.size:
		var one [1]byte
		if m, _ := io.ReadFull(r.src, one[:]); m > 0 {
			r.err = backend.Permanent(fmt.Errorf("source has more than its length of %d bytes", r.size))
			return 0, r.err
		}
		return n, nil
	case err == io.EOF:
		r.err = backend.Permanent(fmt.Errorf("source ended after %d bytes, its length is %d", r.n, r.size))
		return 0, r.err
	case err != nil:
		// Retrying would read the same source again: permanent.
		r.err = backend.Permanent(fmt.Errorf("read source: %w", err))
		return 0, r.err
	}
	return n, nil
}

// releasingReader gives its connection slot back on the first Close.
type releasingReader struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (r *releasingReader) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.release)
	return err
}

// Error is a failed S3 request. It names the operation and the object key,
// and carries the HTTP status and S3 error code when the server answered.
type Error struct {
	Op     string // save, load, stat, list, remove, check bucket, create bucket
	Key    string // object key (or key prefix for list, bucket for bucket ops)
	Status int    // HTTP status; 0 when there was no answer
	Code   string // S3 error code, like NoSuchKey or SlowDown
	Err    error
	// notExist is set for missing objects and buckets, noRepo for a
	// missing bucket.
	notExist, noRepo bool
}

func (e *Error) Error() string {
	s := "s3 " + e.Op + " " + e.Key + ": "
	msg := e.Err.Error()
	if e.Status != 0 {
		status := fmt.Sprintf("HTTP %d", e.Status)
		// Without a response body minio-go uses the status line as code
		// and message; say it once.
		if e.Code != "" && !strings.HasPrefix(e.Code, strconv.Itoa(e.Status)) {
			status += " " + e.Code
		}
		if strings.HasPrefix(msg, strconv.Itoa(e.Status)) {
			msg = status + " " + strings.TrimSpace(strings.TrimPrefix(msg, strconv.Itoa(e.Status)))
		} else {
			msg = status + ": " + msg
		}
	}
	s += msg
	switch {
	case isAuth(e.Status, e.Code):
		s += " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's permissions)"
	case e.Status == http.StatusBadRequest && strings.HasSuffix(e.Op, "bucket") && (e.Code == "" || e.Code == "InvalidBucketName" || strings.HasPrefix(e.Code, "400")):
		// A HEAD of a bucket S3 refuses to name carries no body: say what
		// a 400 there most likely means.
		s += " (the bucket name is not valid: S3 bucket names are 3 to 63 lowercase letters, digits, dots and hyphens)"
	case e.Status == http.StatusInsufficientStorage || e.Code == "XMinioStorageFull":
		s += " (the storage is full)"
	}
	return s
}

// Unwrap gives the underlying error and, for missing objects,
// backend.ErrNotExist (and backend.ErrNoRepository for a missing bucket).
func (e *Error) Unwrap() []error {
	errs := []error{e.Err}
	if e.notExist {
		errs = append(errs, backend.ErrNotExist)
	}
	if e.noRepo {
		errs = append(errs, backend.ErrNoRepository)
	}
	return errs
}

// HTTPStatus is the HTTP status of the answer, 0 when there was none.
func (e *Error) HTTPStatus() int { return e.Status }

func code(err error) string {
	var r minio.ErrorResponse
	if errors.As(err, &r) {
		return r.Code
	}
	return ""
}

func isAuth(status int, code string) bool {
	switch code {
	case "RequestTimeTooSkewed": // 403, but the clock is wrong, not the key
		return false
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
		"InvalidToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidSecurity",
		"XAdminUserNotFound": // versitygw's answer (404) to an unknown access key

		return true
	}
	return status == http.StatusUnauthorized || status == http.StatusForbidden
}

// wrap turns a minio-go error into an *Error, marked permanent when
// retrying cannot help: missing objects and buckets, denied access, bad
// ranges and digests, and other 4xx answers except timeouts, conflicts
// and throttling.
func wrap(op, key string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("s3 %s %s: %w", op, key, err)
	}
	e := &Error{Op: op, Key: key, Err: err}
	var r minio.ErrorResponse
	if !errors.As(err, &r) {
		return e // no answer: network trouble, transient
	}
	e.Status, e.Code = r.StatusCode, r.Code
	switch {
	case isAuth(r.StatusCode, r.Code):
	case r.Code == "NoSuchBucket":
		e.notExist, e.noRepo = true, true
	case r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound:
		e.notExist = true
	}
	if permanent(r.StatusCode, r.Code) {
		return backend.Permanent(e)
	}
	return e
}

func permanent(status int, code string) bool {
	switch code {
	case "RequestTimeout", "IncompleteBody", "SlowDown", "OperationAborted", "InternalError", "ServiceUnavailable":
		return false
	case "InsufficientStorage", "XMinioStorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded":
		// The storage is full or over quota: no retry within a retry
		// budget makes room.
		return true
	}
	if isAuth(status, code) {
		return true
	}
	switch status {
	case http.StatusRequestTimeout, http.StatusConflict, http.StatusTooManyRequests:
		return false
	case http.StatusNotImplemented, http.StatusInsufficientStorage:
		return true
	}
	return status >= 400 && status < 500
}
