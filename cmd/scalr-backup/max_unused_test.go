package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMaxUnusedRefusedFirst: a bad --max-unused is refused by name before
// anything happens: forget --prune forgets nothing, prune opens nothing.
func TestMaxUnusedRefusedFirst(t *testing.T) {
	env := newRepoEnv(t, 2)
	for i := 0; i < 2; i++ {
		backupJSON(t, env, randomBytes(int64(i), 1000), "--stdin-filename", "f")
	}
	snaps := func() int {
		ents, err := os.ReadDir(filepath.Join(env["RESTIC_REPOSITORY"], "snapshots"))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	for _, args := range [][]string{
		{"forget", "--keep-last", "1", "--prune", "--max-unused", "lots"},
		{"prune", "--max-unused", "100%"},
	} {
		res := runCLI(t, env, nil, args...)
		if res.code == 0 || !strings.Contains(res.stderr, "--max-unused") {
			t.Errorf("%v: exit %d, %q; want a failure naming --max-unused", args, res.code, res.stderr)
		}
	}
	if n := snaps(); n != 2 {
		t.Errorf("%d snapshots after a refused forget --prune; want 2", n)
	}
	if res := runCLI(t, env, nil, "forget", "--keep-last", "1", "--prune", "--max-unused", "0%"); res.code != 0 || snaps() != 1 {
		t.Errorf("a good --max-unused: exit %d, %d snapshots\n%s", res.code, snaps(), res.stderr)
	}
}
