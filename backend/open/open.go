// Package open turns a repository location ("local:DIR", "s3:…", "sftp:…"
// or a plain directory) into a ready backend, wrapped as the rest of the
// project expects:
//
//	Retry(Counting(local, s3 or sftp))
//
// Counting sits below Retry so that it counts every real request, retries
// included; the Retry's Report also feeds Counting's retry count.
package open

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/backend/s3"
	"github.com/scalr-platform/scalr-backup/backend/sftp"
)

// Options configure Open and Create.
type Options struct {
	// Getenv reads the environment (AWS_ACCESS_KEY_ID, …); nil means
	// os.Getenv.
	Getenv func(string) string
	// Extended holds restic's "-o key=value" options, such as
	// "s3.region=eu-west-1" or "s3.connections=8".
	Extended []string
	// Retry bounds the retries; zero values take NewRetry's defaults.
	// Its Report, if set, is called in addition to the retry counter.
	Retry backend.RetryOptions
}

// Opened is an opened repository backend. It is itself a backend.Backend
// (the retrying, counting stack); Counts reports the requests made.
type Opened struct {
	backend.Backend
	// Counts counts the requests the backend made (below the retries).
	Counts *backend.Counting
}

// Open opens the repository at location. For a local directory the
// repository must exist (errors wrap backend.ErrNoRepository); for S3 and
// SFTP no request is made until the first operation.
func Open(ctx context.Context, location string, opts Options) (*Opened, error) {
	return open(ctx, location, opts, false)
}

// Create prepares location for a new repository (folders for a local
// directory or over SFTP, the bucket for S3 when missing) and opens it.
func Create(ctx context.Context, location string, opts Options) (*Opened, error) {
	return open(ctx, location, opts, true)
}

func open(ctx context.Context, location string, opts Options, create bool) (*Opened, error) {
	loc, err := backend.ParseLocation(location)
	if err != nil {
		return nil, err
	}
	ext, err := parseExtended(opts.Extended)
	if err != nil {
		return nil, err
	}

	var be backend.Backend
	switch loc.Scheme {
	case "local":
		if len(ext) > 0 {
			return nil, fmt.Errorf("option %q does not apply to local repositories", ext[0].key)
		}
		if create {
			be = local.New(loc.Path)
		} else {
			lb, err := local.Open(loc.Path)
			if err != nil {
				return nil, err
			}
			be = lb
		}
	case "s3":
		cfg, err := s3.ParseConfig(loc.Path)
		if err != nil {
			return nil, err
		}
		if err := configure(&cfg, opts, ext); err != nil {
			return nil, err
		}
		sb, err := s3.Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		be = sb
	case "sftp":
		cfg, err := sftp.ParseConfig(loc.Path)
		if err != nil {
			return nil, err
		}
		if err := configure(&cfg, opts, ext); err != nil {
			return nil, err
		}
		// No connection yet: the first operation connects, inside the
		// retries below.
		sb, err := sftp.New(ctx, cfg)
		if err != nil {
			return nil, err
		}
		be = sb
	default:
		return nil, fmt.Errorf("repository location %q: unsupported backend %q", location, loc.Scheme)
	}

	counting := backend.NewCounting(be)
	ro := opts.Retry
	if user := ro.Report; user != nil {
		ro.Report = func(op string, h backend.Handle, attempt int, err error) {
			counting.ReportRetry(op, h, attempt, err)
			user(op, h, attempt, err)
		}
	} else {
		ro.Report = counting.ReportRetry
	}
	o := &Opened{Backend: backend.NewRetry(counting, ro), Counts: counting}

	if c, ok := o.Backend.(backend.Creator); ok && create {
		if err := c.Create(ctx); err != nil {
			_ = o.Close()
			return nil, err
		}
	}
	return o, nil
}

type option struct{ key, value string }

// backendConfig is what the S3 and SFTP configurations have in common: the
// environment's settings, then the -o options, which win.
type backendConfig interface {
	ApplyEnv(getenv func(string) string)
	ApplyOption(key, value string) error
}

func configure(cfg backendConfig, opts Options, ext []option) error {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg.ApplyEnv(getenv)
	for _, o := range ext {
		if err := cfg.ApplyOption(o.key, o.value); err != nil {
			return err
		}
	}
	return nil
}

// parseExtended splits "key=value" options.
func parseExtended(list []string) ([]option, error) {
	var opts []option
	for _, s := range list {
		k, v, ok := strings.Cut(s, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid option %q: want key=value", s)
		}
		opts = append(opts, option{k, v})
	}
	return opts, nil
}

// Unwrap returns the decorated backend, so that helpers such as
// backend.Leftovers see through Opened.
func (o *Opened) Unwrap() backend.Backend { return o.Backend }
