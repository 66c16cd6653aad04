// Package testenv finds and starts the real services that integration tests
// need: restic CLIs, an S3 server, a Docker engine. Tools are installed by
// scripts/test-setup.sh into a cache folder outside the checkout, so a fresh
// clone on the same machine reuses them.
package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// CacheDir is where slow-to-build tools and images are kept between runs:
// $SCALR_BACKUP_CACHE, else $XDG_CACHE_HOME/scalr-backup, else
// $HOME/.cache/scalr-backup.
func CacheDir() string {
	if d := os.Getenv("SCALR_BACKUP_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "scalr-backup")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "scalr-backup")
}

// ToolPath is where scripts/test-setup.sh installs a versioned tool:
// CACHE/tools/NAME-VERSION/NAME.
func ToolPath(name, version string) string {
	return filepath.Join(CacheDir(), "tools", name+"-"+version, name)
}

// Integration reports whether integration tests must run. They are skipped
// under `go test -short`; with SCALR_BACKUP_REQUIRE_INTEGRATION=1 (set by
// the README's test command) a missing tool fails the test instead of
// skipping it, so CI can never pass by skipping.
func Integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test skipped in -short mode")
	}
}

// Missing reports a tool or service that is not available: a failure when
// SCALR_BACKUP_REQUIRE_INTEGRATION=1, a skip otherwise.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("SCALR_BACKUP_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}
