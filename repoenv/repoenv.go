// Package repoenv finds and opens a repository the way restic does: the
// location from -r or RESTIC_REPOSITORY (or a repository file), the
// password from a command, a file, RESTIC_PASSWORD or a prompt, the
// compression and pack size from RESTIC_COMPRESSION and RESTIC_PACK_SIZE.
// It opens the storage with retries and request counting (backend/open)
// and the repository with its key, or creates one when asked.
//
// It is the glue every program built on this module needs, so that a
// repository configured for the restic CLI opens the same way here; the
// CLI only fills Settings from its flags.
package repoenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/repo"
)

// Settings say where a repository is and how to open it. Set fields win
// over the environment, as flags win over it in restic; the zero value
// reads everything from the environment.
type Settings struct {
	// Repository is the location (restic's -r); empty: RESTIC_REPOSITORY.
	Repository string
	// RepositoryFile names a file holding the location; empty:
	// RESTIC_REPOSITORY_FILE. A location and a file together are refused.
	RepositoryFile string
	// PasswordFile and PasswordCommand are restic's --password-file and
	// --password-command; empty: RESTIC_PASSWORD_FILE and
	// RESTIC_PASSWORD_COMMAND. Both together are refused.
	PasswordFile    string
	PasswordCommand string
	// Compression is auto, off, max or fastest; empty: RESTIC_COMPRESSION,
	// else auto.
	Compression string
	// PackSizeMiB is the target pack size; 0: RESTIC_PACK_SIZE, else the
	// repository's default.
	PackSizeMiB uint
	// Options are restic's "-o key=value" storage options.
	Options []string
	// LockRetry is how long a locked repository is waited for (restic's
	// --retry-lock); LockWait, if set, is told when a wait starts.
	LockRetry time.Duration
	LockWait  func(holder *repo.LockInfo, upTo time.Duration)
	// Init is what OpenOrInit creates a repository with; the zero value
	// is init's default (the newest format, a calibrated key derivation).
	Init repo.InitOptions

	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// Prompt asks for the password when nothing else gives one (a
	// terminal prompt in the CLI); nil: no password is an error.
	Prompt func(ctx context.Context) (string, error)
	// CommandStderr receives the password command's standard error; nil
	// discards it.
	CommandStderr io.Writer
	// Retry is told of every storage retry as it happens; nil: retries
	// are counted but not told.
	Retry func(backend.RetryEvent)
	// Skipped is told of each unreadable file a listing passes over (see
	// repo.Options.Skipped).
	Skipped func(repo.SkippedFile)
	// Opened, if set, is told of each storage OpenBackend opens, before
	// anything is asked of it: a caller can then report the requests made
	// even when opening the repository fails (the CLI's --verbose).
	Opened func(*open.Opened)
}

func (s *Settings) getenv(k string) string {
	if s.Getenv == nil {
		return os.Getenv(k)
	}
	return s.Getenv(k)
}

// setOrEnv is set when it is not empty (a flag wins), else the variable.
func (s *Settings) setOrEnv(set, variable string) string {
	if set != "" {
		return set
	}
	return s.getenv(variable)
}

// Location is the repository location: Repository or RESTIC_REPOSITORY,
// else the content of RepositoryFile or RESTIC_REPOSITORY_FILE (white
// space trimmed).
func (s *Settings) Location() (string, error) {
	loc := s.setOrEnv(s.Repository, "RESTIC_REPOSITORY")
	file := s.setOrEnv(s.RepositoryFile, "RESTIC_REPOSITORY_FILE")
	switch {
	case loc != "" && file != "":
		return "", errors.New("a repository (-r / RESTIC_REPOSITORY) and a repository file (--repository-file / RESTIC_REPOSITORY_FILE) are mutually exclusive")
	case file != "":
		buf, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read the repository file: %w", err)
		}
		loc = strings.TrimSpace(string(buf))
		if loc == "" {
			return "", fmt.Errorf("the repository file %s is empty", file)
		}
	case loc == "":
		return "", errors.New("no repository given: set RESTIC_REPOSITORY or RESTIC_REPOSITORY_FILE, or use -r")
	}
	return loc, nil
}

// RepoOptions are the repository options: compression, pack size, lock
// retry and the skipped-file hook.
func (s *Settings) RepoOptions() (repo.Options, error) {
	var o repo.Options
	comp, err := repo.ParseCompression(s.setOrEnv(s.Compression, "RESTIC_COMPRESSION"))
	if err != nil {
		return o, err
	}
	o.Compression = comp
	size := s.PackSizeMiB
	if size == 0 {
		if v := s.getenv("RESTIC_PACK_SIZE"); v != "" {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return o, fmt.Errorf("RESTIC_PACK_SIZE=%q: not a whole number of MiB", v)
			}
			size = uint(n)
		}
	}
	o.PackSize = int(size) << 20
	o.LockRetry = s.LockRetry
	o.LockWait = s.LockWait
	o.Skipped = s.Skipped
	return o, nil
}

// Password finds the repository password as restic does: PasswordCommand
// or RESTIC_PASSWORD_COMMAND (its whole output, white space trimmed),
// else PasswordFile or RESTIC_PASSWORD_FILE (see ReadPasswordFile), else
// RESTIC_PASSWORD (as it is), else Prompt.
func (s *Settings) Password(ctx context.Context) (string, error) {
	file := s.setOrEnv(s.PasswordFile, "RESTIC_PASSWORD_FILE")
	cmdline := s.setOrEnv(s.PasswordCommand, "RESTIC_PASSWORD_COMMAND")
	switch {
	case file != "" && cmdline != "":
		return "", errors.New("a password file and a password command are mutually exclusive (--password-file / RESTIC_PASSWORD_FILE and --password-command / RESTIC_PASSWORD_COMMAND)")
	case cmdline != "":
		return s.passwordFromCommand(ctx, cmdline)
	case file != "":
		return ReadPasswordFile(file)
	}
	if p := s.getenv("RESTIC_PASSWORD"); p != "" {
		return p, nil
	}
	if s.Prompt != nil {
		return s.Prompt(ctx)
	}
	return "", errors.New("no password given: set RESTIC_PASSWORD_FILE, RESTIC_PASSWORD_COMMAND or RESTIC_PASSWORD")
}

// passwordFromCommand runs the command through /bin/sh as restic does.
// The error names the failure, never the output: that is the secret.
func (s *Settings) passwordFromCommand(ctx context.Context, cmdline string) (string, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", cmdline)
	cmd.Stderr = s.CommandStderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("password command failed: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// ReadPasswordFile reads a password file the way restic does, so that the
// same file opens the same repository with both: the whole file, converted
// to UTF-8 (a UTF-8 byte order mark dropped, UTF-16 with a byte order mark
// decoded), white space trimmed at both ends.
func ReadPasswordFile(name string) (string, error) {
	buf, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	return passwordFromFileBytes(buf)
}

// passwordFromFileBytes is ReadPasswordFile on a file's content.
func passwordFromFileBytes(buf []byte) (string, error) {
	text, _, err := transform.Bytes(unicode.BOMOverride(unicode.UTF8.NewDecoder()), buf)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	return strings.TrimSpace(string(text)), nil
}

// OpenBackend opens the storage at Location, wrapped with retries (bounded
// by SCALR_BACKUP_RETRY_*) and request counting. With create it prepares a
// new repository's place (folders, the bucket) first.
func (s *Settings) OpenBackend(ctx context.Context, create bool) (*open.Opened, error) {
	loc, err := s.Location()
	if err != nil {
		return nil, err
	}
	retry, err := open.RetryFromEnv(s.getenv)
	if err != nil {
		return nil, err
	}
	retry.Log = s.Retry
	opts := open.Options{Getenv: s.getenv, Extended: s.Options, Retry: retry}
	var o *open.Opened
	if create {
		o, err = open.Create(ctx, loc, opts)
	} else {
		o, err = open.Open(ctx, loc, opts)
	}
	if err == nil && s.Opened != nil {
		s.Opened(o)
	}
	return o, err
}

// Open opens the repository with its password. Closing the repository
// closes the storage.
func (s *Settings) Open(ctx context.Context) (*repo.Repository, error) {
	opts, err := s.RepoOptions()
	if err != nil {
		return nil, err
	}
	be, err := s.OpenBackend(ctx, false)
	if err != nil {
		return nil, err
	}
	pw, err := s.Password(ctx)
	if err != nil {
		_ = be.Close()
		return nil, err
	}
	r, err := repo.Open(ctx, be, pw, opts)
	if err != nil {
		_ = be.Close()
		return nil, err
	}
	return r, nil
}

// Opened is the outcome of OpenOrInit.
type Opened struct {
	Repo *repo.Repository
	// Created is true when there was no repository and OpenOrInit made one.
	Created bool
	// Requests are the storage requests a failed attempt made, retries
	// included (a pass reports them though it has no repository); zero
	// on success, where Repo's storage counts from then on.
	Requests backend.Counts
}

// OpenOrInit opens the repository; when there is none and create is set,
// it creates one with s.Init. Every other failure is returned as it is: a wrong
// password never creates anything.
func (s *Settings) OpenOrInit(ctx context.Context, create bool) (Opened, error) {
	var out Opened
	opts, err := s.RepoOptions()
	if err != nil {
		return out, err
	}
	if _, err := s.Location(); err != nil {
		return out, err
	}
	pw, err := s.Password(ctx)
	if err != nil {
		return out, err
	}
	be, err := s.OpenBackend(ctx, false)
	if err == nil {
		out.Repo, err = repo.Open(ctx, be, pw, opts)
		if err == nil {
			return out, nil
		}
		out.Requests = be.Counts.Snapshot()
		_ = be.Close()
	}
	if !create || !errors.Is(err, backend.ErrNoRepository) {
		return out, err
	}
	be, err = s.OpenBackend(ctx, true)
	if err != nil {
		return out, err
	}
	out.Repo, err = repo.Init(ctx, be, pw, s.Init, opts)
	if err != nil {
		out.Requests = out.Requests.Add(be.Counts.Snapshot())
		_ = be.Close()
		return out, err
	}
	out.Created = true
	return out, nil
}
