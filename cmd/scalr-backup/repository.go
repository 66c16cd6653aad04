package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/repo"
)

// location is the repository location as restic finds it: -r or
// RESTIC_REPOSITORY, else --repository-file or RESTIC_REPOSITORY_FILE (the
// file's content, white space trimmed); both kinds together are refused.
func (a *app) location() (string, error) {
	loc := a.repoLocation
	if loc == "" {
		loc = a.getenv("RESTIC_REPOSITORY")
	}
	file := a.repoFile
	if file == "" {
		file = a.getenv("RESTIC_REPOSITORY_FILE")
	}
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

// repoOptions reads compression and pack size from flags or environment.
func (a *app) repoOptions() (repo.Options, error) {
	var o repo.Options
	c := a.compression
	if c == "" {
		c = a.getenv("RESTIC_COMPRESSION")
	}
	comp, err := repo.ParseCompression(c)
	if err != nil {
		return o, err
	}
	o.Compression = comp
	size := a.packSizeMiB
	if size == 0 {
		if s := a.getenv("RESTIC_PACK_SIZE"); s != "" {
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return o, fmt.Errorf("RESTIC_PACK_SIZE=%q: not a whole number of MiB", s)
			}
			size = uint(n)
		}
	}
	o.PackSize = int(size) << 20
	o.LockRetry = a.retryLock
	o.LockWait = func(holder *repo.LockInfo, upTo time.Duration) {
		if !a.quiet {
			fmt.Fprintf(a.stderr, "repository is locked (%s); waiting up to %s for the lock\n", holder, upTo)
		}
	}
	return o, nil
}

// openBackend opens (or, for init, prepares) the storage at the location,
// wrapped with retries and request counting.
func (a *app) openBackend(ctx context.Context, create bool) (backend.Backend, error) {
	loc, err := a.location()
	if err != nil {
		return nil, err
	}
	retry, err := open.RetryFromEnv(a.getenv)
	if err != nil {
		return nil, err
	}
	retry.Log = a.storageRetry
	opts := open.Options{Getenv: a.getenv, Extended: a.options, Retry: retry}
	var o *open.Opened
	if create {
		o, err = open.Create(ctx, loc, opts)
	} else {
		o, err = open.Open(ctx, loc, opts)
	}
	if err != nil {
		return nil, err
	}
	a.counts = o.Counts
	return o, nil
}

// storageRetry tells of a storage retry as it happens: a command waiting
// on storage that does not answer is never silent. By default one line on
// standard error (also with --quiet: it explains a wait), else a.retryLog
// (run and daemon log it). Errors never hold a secret: backends keep
// credentials out of them.
func (a *app) storageRetry(ev backend.RetryEvent) {
	if a.retryLog != nil {
		a.retryLog(ev)
		return
	}
	a.retryMu.Lock()
	defer a.retryMu.Unlock()
	fmt.Fprintf(a.stderr, "storage retry: %s\n", ev)
}

// password finds the repository password as restic does: --password-command
// or RESTIC_PASSWORD_COMMAND (its whole output, white space trimmed at both
// ends), else --password-file or RESTIC_PASSWORD_FILE (the whole file, a
// UTF-8 or UTF-16 byte order mark removed, trimmed the same way), else
// RESTIC_PASSWORD (as it is), else a prompt on a terminal. A command and a
// file together are refused, as restic refuses them.
func (a *app) password(ctx context.Context, prompt string) (string, error) {
	file := a.passwordFile
	if file == "" {
		file = a.getenv("RESTIC_PASSWORD_FILE")
	}
	cmdline := a.passwordCmd
	if cmdline == "" {
		cmdline = a.getenv("RESTIC_PASSWORD_COMMAND")
	}
	if file != "" && cmdline != "" {
		return "", errors.New("a password file and a password command are mutually exclusive (--password-file / RESTIC_PASSWORD_FILE and --password-command / RESTIC_PASSWORD_COMMAND)")
	}
	if cmdline != "" {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", cmdline)
		cmd.Stderr = a.stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("password command failed: %w", err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	if file != "" {
		return readPasswordFile(file)
	}
	if p := a.getenv("RESTIC_PASSWORD"); p != "" {
		return p, nil
	}
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(a.stderr, prompt)
		buf, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(buf), nil
	}
	return "", errors.New("no password given: set RESTIC_PASSWORD_FILE, RESTIC_PASSWORD_COMMAND or RESTIC_PASSWORD")
}

// readPasswordFile reads a password file the way restic does, so that the
// same file opens the same repository with both: the whole file, converted
// to UTF-8 (a UTF-8 byte order mark dropped, UTF-16 with a byte order mark
// decoded), white space trimmed at both ends.
func readPasswordFile(name string) (string, error) {
	buf, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	return passwordFromFileBytes(buf)
}

func passwordFromFileBytes(buf []byte) (string, error) {
	text, _, err := transform.Bytes(unicode.BOMOverride(unicode.UTF8.NewDecoder()), buf)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	return strings.TrimSpace(string(text)), nil
}

// openRepo opens the repository with its password.
func (a *app) openRepo(ctx context.Context) (*repo.Repository, error) {
	opts, err := a.repoOptions()
	if err != nil {
		return nil, err
	}
	be, err := a.openBackend(ctx, false)
	if err != nil {
		return nil, err
	}
	pw, err := a.password(ctx, "enter password for repository: ")
	if err != nil {
		return nil, err
	}
	opts.Skipped = a.skippedFile
	return repo.Open(ctx, be, pw, opts)
}
