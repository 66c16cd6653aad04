package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/repo"
)

func (a *app) location() (string, error) {
	loc := a.repoLocation
	if loc == "" {
		loc = a.getenv("RESTIC_REPOSITORY")
	}
	if loc == "" {
		return "", errors.New("no repository given: set RESTIC_REPOSITORY or use -r")
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

// password finds the repository password: --password-file,
// RESTIC_PASSWORD_FILE, --password-command, RESTIC_PASSWORD_COMMAND,
// RESTIC_PASSWORD, else a prompt on a terminal.
func (a *app) password(ctx context.Context, prompt string) (string, error) {
	file := a.passwordFile
	if file == "" {
		file = a.getenv("RESTIC_PASSWORD_FILE")
	}
	if file != "" {
		buf, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read password file: %w", err)
		}
		return firstLine(string(buf)), nil
	}
	cmdline := a.passwordCmd
	if cmdline == "" {
		cmdline = a.getenv("RESTIC_PASSWORD_COMMAND")
	}
	if cmdline != "" {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", cmdline)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("password command failed: %w", err)
		}
		return firstLine(string(out)), nil
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

func firstLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	if sc.Scan() {
		return strings.TrimRight(sc.Text(), "\r")
	}
	return ""
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
	return repo.Open(ctx, be, pw, opts)
}
