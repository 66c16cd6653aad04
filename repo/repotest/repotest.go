// Package repotest helps tests of programs built on package repo: a
// cheap key derivation and a ready repository in memory or in a backend
// of the test's choosing. Never for real repositories: FastKDF makes a
// password easy to guess.
package repotest

import (
	"context"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/repo"
)

// Password is the password New uses.
const Password = "repotest password"

// FastKDF returns scrypt parameters that take about a millisecond, where
// init's calibrated ones take half a second. restic opens repositories
// keyed with them as well.
func FastKDF() *repo.KDFParams {
	return &repo.KDFParams{N: 1024, R: 8, P: 1}
}

// New returns a new repository (the newest format version) in memory,
// opened with Password and closed when the test ends.
func New(t testing.TB) *repo.Repository {
	t.Helper()
	return Init(t, mem.New(), Password, repo.InitOptions{}, repo.Options{})
}

// Init creates a repository in be with FastKDF (unless io sets a KDF) and
// returns it opened; it is closed when the test ends. A failure ends the
// test.
func Init(t testing.TB, be backend.Backend, password string, io repo.InitOptions, opts repo.Options) *repo.Repository {
	t.Helper()
	if io.KDF == nil {
		io.KDF = FastKDF()
	}
	r, err := repo.Init(context.Background(), be, password, io, opts)
	if err != nil {
		t.Fatalf("repotest: init a repository in %s: %v", be.Location(), err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}
