package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/repo"
)

// dump takes its lock while it looks the snapshot up. Whichever of the two
// fails, the dump fails with that reason and leaves no lock of its own: a
// snapshot that does not exist is named (and the lock taken meanwhile is
// removed), an exclusive lock held by a prune makes it exit as locked, and
// a dump that succeeds removes its lock too.
func TestDumpLockWithSnapshotLookup(t *testing.T) {
	env := newRepoEnv(t, 2)
	backupJSON(t, env, []byte("payload"), "--stdin-filename", "a")
	locks := func() []string {
		ents, err := os.ReadDir(filepath.Join(env["RESTIC_REPOSITORY"], "locks"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	if res := runCLI(t, env, nil, "dump", "latest", "/a"); res.code != 0 || res.stdout != "payload" {
		t.Fatalf("dump: exit %d, %q: %s", res.code, res.stdout, res.stderr)
	}
	if l := locks(); len(l) != 0 {
		t.Fatalf("locks left by a dump: %v", l)
	}
	res := runCLI(t, env, nil, "dump", "0123abcd", "/a")
	if res.code != exitError || !strings.Contains(res.stderr, "0123abcd") {
		t.Fatalf("dump of a missing snapshot: exit %d: %s", res.code, res.stderr)
	}
	if l := locks(); len(l) != 0 {
		t.Fatalf("locks left by a dump of a missing snapshot: %v", l)
	}

	ctx := context.Background()
	be, err := local.Open(env["RESTIC_REPOSITORY"])
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, testPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	prune, err := r.Lock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	held := locks()
	res = runCLI(t, env, nil, "dump", "latest", "/a")
	if res.code != exitLocked || !strings.Contains(res.stderr, "locked") || res.stdout != "" {
		t.Fatalf("dump beside an exclusive lock: exit %d, %q: %s", res.code, res.stdout, res.stderr)
	}
	if l := locks(); len(l) != 1 || l[0] != held[0] {
		t.Fatalf("locks after the refused dump: %v; want only the exclusive one %v", l, held)
	}
	if err := prune.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}
