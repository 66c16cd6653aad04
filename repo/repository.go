// Package repo reads and writes restic repositories: keys and config,
// packs and their index, trees, snapshots, stream backup and stream restore.
// Everything it writes is readable by the restic CLI and everything restic
// writes is readable here.
package repo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/chunker"
	"github.com/scalr-platform/scalr-backup/internal/crypto"
)

// Compression is the zstd setting for new blobs in a version 2 repository.
type Compression int

// Compression modes, as restic's --compression spells them.
const (
	CompressionAuto Compression = iota
	CompressionOff
	CompressionMax
)

// ParseCompression reads auto, off or max ("" means auto).
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "", "auto":
		return CompressionAuto, nil
	case "off":
		return CompressionOff, nil
	case "max":
		return CompressionMax, nil
	}
	return 0, fmt.Errorf("invalid compression mode %q: want auto, off or max", s)
}

func (c Compression) String() string {
	switch c {
	case CompressionOff:
		return "off"
	case CompressionMax:
		return "max"
	}
	return "auto"
}

// Pack size limits, as restic's RESTIC_PACK_SIZE has them.
const (
	DefaultPackSize = 16 << 20
	MinPackSize     = 4 << 20
	MaxPackSize     = 128 << 20
)

// Options tune how a repository writes. The zero value is restic's defaults
// sized for this machine.
type Options struct {
	Compression Compression
	// PackSize is the target pack size in bytes (0 means 16 MiB).
	PackSize int
	// Workers hash, compress and seal blobs (0 means GOMAXPROCS).
	Workers int
	// Uploaders save packs concurrently (0 means 2).
	Uploaders int
	// LockRetry is how long to retry taking a lock held by another
	// process (restic's --retry-lock); 0 fails at once.
	LockRetry time.Duration
	// LockWait, when set, is told once that a lock is being waited for.
	LockWait func(holder *LockInfo, upTo time.Duration)
	// Skipped, when set, is told once about each file a read path left
	// out because it is damaged or can never be read (a snapshot file in a
	// listing, an index file while loading the index, a key file while
	// opening), so that the caller can name it as restic does
	// ("Ignoring …"). Only operations that need the file fail.
	Skipped func(SkippedFile)
}

func (o Options) normalized() (Options, error) {
	if o.PackSize == 0 {
		o.PackSize = DefaultPackSize
	}
	if o.PackSize < MinPackSize || o.PackSize > MaxPackSize {
		return o, fmt.Errorf("pack size %d MiB out of range: want %d to %d MiB", o.PackSize>>20, MinPackSize>>20, MaxPackSize>>20)
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Uploaders <= 0 {
		o.Uploaders = 2
	}
	return o, nil
}

// Repository is an open repository: a backend, the master key, the config
// and the loaded index.
type Repository struct {
	be    backend.Backend
	key   *crypto.Key
	keyID ID
	cfg   Config
	opts  Options

	enc *zstd.Encoder
	dec *zstd.Decoder

	// bufs recycles blob-sized buffers (see getBuf).
	bufs bufPool

	idxOnce sync.Once
	idxErr  error
	idx     *Index

	// skipped holds the handles already reported to Options.Skipped.
	skipped sync.Map

	// lockRefresh and lockLostAfter override the lock timing (zero:
	// restic's); tests shorten them to see a lock lost.
	lockRefresh, lockLostAfter time.Duration

	// reloadMu serializes ReloadIndex; reloadStarts counts the reloads
	// started, so callers that queued behind a newer one do not list again.
	reloadMu     sync.Mutex
	reloadStarts atomic.Uint64
}

// InitOptions choose the format of a new repository.
type InitOptions struct {
	// Version is 1 or 2 (0 means 2).
	Version uint
	// KDF overrides scrypt calibration. Tests use small values to save
	// time (repotest.FastKDF); production repositories leave it nil.
	KDF *KDFParams
	// Username and Hostname are recorded in the first key file (defaults:
	// the current user and host).
	Username, Hostname string
}

// Init creates a repository in be, which must hold none yet, and returns it
// opened with the new key.
func Init(ctx context.Context, be backend.Backend, password string, io InitOptions, opts Options) (*Repository, error) {
	if password == "" {
		return nil, errors.New("init: empty password")
	}
	if io.Version == 0 {
		io.Version = MaxVersion
	}
	if io.Version < MinVersion || io.Version > MaxVersion {
		return nil, fmt.Errorf("init: unsupported repository version %d (want %d or %d)", io.Version, MinVersion, MaxVersion)
	}
	if _, err := be.Stat(ctx, backend.Handle{Type: backend.ConfigFile}); err == nil {
		return nil, fmt.Errorf("init %s: config file already exists", be.Location())
	} else if !errors.Is(err, backend.ErrNotExist) {
		return nil, fmt.Errorf("init %s: %w", be.Location(), err)
	}
	if c, ok := be.(backend.Creator); ok {
		if err := c.Create(ctx); err != nil {
			return nil, fmt.Errorf("init %s: %w", be.Location(), err)
		}
	}
	pol, err := chunker.RandomPolynomial()
	if err != nil {
		return nil, err
	}
	var rid ID
	if _, err := rand.Read(rid[:]); err != nil {
		return nil, fmt.Errorf("init: repository id: %w", err)
	}
	cfg := Config{Version: io.Version, ID: rid.String(), ChunkerPolynomial: pol}
	master, err := crypto.NewRandomKey()
	if err != nil {
		return nil, err
	}
	r, err := newRepository(be, master, cfg, opts)
	if err != nil {
		return nil, err
	}
	keyID, err := r.addKey(ctx, password, io.KDF.params(), io.Username, io.Hostname)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	r.keyID = keyID
	// The config is written last: a repository without it is not a
	// repository, so a failed init leaves nothing that opens.
	if err := r.saveConfig(ctx); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	r.idx = NewIndex()
	r.idxOnce.Do(func() {})
	return r, nil
}

// Open finds the key that password opens and loads the config. The index
// is loaded on first use.
//
// The config is fetched while the key files are listed, loaded and opened
// (scrypt takes a third of a second of CPU): every command starts here, and
// on storage 20 ms away the former config Stat, key listing, key load and
// config load were four round trips in turn around the scrypt.
func Open(ctx context.Context, be backend.Backend, password string, opts Options) (*Repository, error) {
	searchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type found struct {
		master  *crypto.Key
		id      ID
		damaged []SkippedFile
		err     error
	}
	key := make(chan found, 1)
	go func() {
		var f found
		f.master, f.id, f.damaged, f.err = searchKey(searchCtx, be, password)
		key <- f
	}()
	raw, err := backend.LoadAll(ctx, be, backend.Handle{Type: backend.ConfigFile})
	if err != nil {
		// A missing or unreadable config says more than the key search:
		// stop it, and let it end before the caller may close be.
		cancel()
		<-key
		return nil, configError(ctx, be, err)
	}
	k := <-key
	if k.err != nil {
		return nil, k.err
	}
	plain, err := k.master.Open(nil, raw)
	if err != nil {
		return nil, corrupt("config", "decrypt: %w", err)
	}
	cfg, err := decodeConfig(plain)
	if err != nil {
		return nil, corrupt("config", "%w", err)
	}
	r, err := newRepository(be, k.master, cfg, opts)
	if err != nil {
		return nil, err
	}
	r.keyID = k.id
	r.reportSkipped(k.damaged...)
	return r, nil
}

// configError explains why the config could not be loaded: a refused
// request or a missing bucket as such, a lost config beside key files as
// damage, and an empty location as no repository.
func configError(ctx context.Context, be backend.Backend, err error) error {
	if errors.Is(err, backend.ErrNotExist) && !errors.Is(err, backend.ErrNoRepository) {
		// A backend's Stat may know more than its Load: SFTP's says
		// when the repository's folder itself is missing. One request
		// more, on this path only.
		if _, serr := be.Stat(ctx, backend.Handle{Type: backend.ConfigFile}); serr != nil {
			err = serr
		}
	}
	if !errors.Is(err, backend.ErrNotExist) || errors.Is(err, backend.ErrNoRepository) {
		// Refused, or the bucket itself is missing (which the error
		// names, unlike an empty location's).
		return fmt.Errorf("open %s: %w", be.Location(), err)
	}
	// Some servers answer a request with bad credentials with a bare 404.
	// One LIST tells a missing repository from a refused request (whose
	// error carries the reason), and from a lost config file.
	keys := 0
	if lerr := be.List(ctx, backend.KeyFile, func(backend.FileInfo) error { keys++; return nil }); lerr != nil &&
		(!errors.Is(lerr, backend.ErrNotExist) || errors.Is(lerr, backend.ErrNoRepository)) {
		return fmt.Errorf("open %s: %w", be.Location(), lerr)
	}
	if keys > 0 {
		return corrupt("config", "missing, but the repository has %d key files", keys)
	}
	return fmt.Errorf("open %s: %w: the location exists but holds no repository (no config file)", be.Location(), backend.ErrNoRepository)
}

func newRepository(be backend.Backend, key *crypto.Key, cfg Config, opts Options) (*Repository, error) {
	opts, err := opts.normalized()
	if err != nil {
		return nil, err
	}
	if cfg.Version < 2 && opts.Compression == CompressionMax {
		return nil, fmt.Errorf("compression %q needs repository format version 2; this repository is version %d", opts.Compression, cfg.Version)
	}
	// auto uses the library's fastest level, not the SpeedDefault restic's
	// auto uses: on the `make bench` stream it cost about a third less
	// compression CPU (229 vs 146 MiB per CPU second on COPY text) for a
	// repository 0.2% larger, and compression is most of a first backup's
	// CPU. Both produce plain zstd frames that any reader opens.
	level := zstd.SpeedFastest
	if opts.Compression == CompressionMax {
		level = zstd.SpeedBestCompression
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(512<<10),
		// One encoder per worker: with fewer, workers queue for one.
		zstd.WithEncoderConcurrency(opts.Workers),
		zstd.WithZeroFrames(true),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(16<<30),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &Repository{be: be, key: key, cfg: cfg, opts: opts, enc: enc, dec: dec}, nil
}

// Close releases the compressors and closes the backend: from a
// successful Open or Init on, the repository owns it. (Backends close
// idempotently, so a caller's own deferred Close of the backend is
// harmless.)
func (r *Repository) Close() error {
	r.dec.Close()
	err := r.enc.Close()
	if berr := r.be.Close(); err == nil && berr != nil {
		err = fmt.Errorf("close %s: %w", r.be.Location(), berr)
	}
	return err
}

// Backend returns the storage the repository lives in.
func (r *Repository) Backend() backend.Backend { return r.be }

// Config returns the repository's config.
func (r *Repository) Config() Config { return r.cfg }

// KeyID names the key file that opened the repository.
func (r *Repository) KeyID() ID { return r.keyID }

// Options returns the effective write options.
func (r *Repository) Options() Options { return r.opts }

// compressing reports whether new blobs and unpacked files are compressed.
func (r *Repository) compressing() bool {
	return r.cfg.Version >= 2 && r.opts.Compression != CompressionOff
}

func (r *Repository) saveConfig(ctx context.Context) error {
	plain, err := jsonMarshal(r.cfg)
	if err != nil {
		return err
	}
	sealed, err := r.key.Seal(nil, plain)
	if err != nil {
		return err
	}
	if err := r.be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, backend.BytesSource(sealed)); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	return nil
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}

func currentHost() string {
	h, _ := os.Hostname()
	return h
}
