package main

// The repository from flags and restic's environment: package repoenv
// does the work; this file fills its Settings from the global flags and
// adds what only a terminal program has (the prompt, the retry line on
// standard error, the --verbose request counter).

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repoenv"
)

// settings are the repository settings of this invocation; prompt is what
// a terminal prompt for the password says.
func (a *app) settings(prompt string) *repoenv.Settings {
	return &repoenv.Settings{
		Repository:      a.repoLocation,
		RepositoryFile:  a.repoFile,
		PasswordFile:    a.passwordFile,
		PasswordCommand: a.passwordCmd,
		Compression:     a.compression,
		PackSizeMiB:     a.packSizeMiB,
		Options:         a.options,
		LockRetry:       a.retryLock,
		LockWait:        a.lockWait,
		Getenv:          a.getenv,
		Prompt:          a.terminalPrompt(prompt),
		CommandStderr:   a.stderr,
		Retry:           a.storageRetry,
		Skipped:         a.skippedFile,
		Opened:          func(o *open.Opened) { a.counts = o.Counts },
	}
}

// lockWait says that a command waits for a locked repository.
func (a *app) lockWait(holder *repo.LockInfo, upTo time.Duration) {
	if !a.quiet {
		fmt.Fprintf(a.stderr, "repository is locked (%s); waiting up to %s for the lock\n", holder, upTo)
	}
}

// terminalPrompt asks for the password when standard input is a terminal
// (nil otherwise: then no password is an error, never a hang).
func (a *app) terminalPrompt(prompt string) func(context.Context) (string, error) {
	f, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func(context.Context) (string, error) {
		fmt.Fprint(a.stderr, prompt)
		buf, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(buf), nil
	}
}

const openPrompt = "enter password for repository: "

// repoOptions reads compression and pack size from flags or environment.
func (a *app) repoOptions() (repo.Options, error) { return a.settings("").RepoOptions() }

// password finds the repository password as restic does.
func (a *app) password(ctx context.Context, prompt string) (string, error) {
	return a.settings(prompt).Password(ctx)
}

// openBackend opens (or, for init, prepares) the storage at the location,
// wrapped with retries and request counting.
func (a *app) openBackend(ctx context.Context, create bool) (backend.Backend, error) {
	o, err := a.settings("").OpenBackend(ctx, create)
	if err != nil {
		return nil, err
	}
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

// openRepo opens the repository with its password.
func (a *app) openRepo(ctx context.Context) (*repo.Repository, error) {
	return a.settings(openPrompt).Open(ctx)
}
