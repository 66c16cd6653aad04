package main

// repair index rebuilds the index from the packs: after index files were
// lost or damaged, check names the problem and advises it, repair makes the
// repository whole again for both restic and scalr-backup, and prune works.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

func TestRepairIndex(t *testing.T) {
	testenv.Integration(t)
	restic := testenv.Restic(t, testenv.Restic0181)
	for _, damage := range []string{"deleted", "flipped"} {
		t.Run(damage, func(t *testing.T) {
			env := newRepoEnv(t, 2)
			dir := env["RESTIC_REPOSITORY"]
			data := randomBytes(7, 6<<20)
			backupJSON(t, env, data, "--stdin-filename", "a.bin")
			backupJSON(t, env, randomBytes(8, 3<<20), "--stdin-filename", "b.bin")
			files, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
			if len(files) != 2 {
				t.Fatalf("%d index files", len(files))
			}
			for _, f := range files {
				if damage == "deleted" {
					os.Remove(f)
					continue
				}
				buf, _ := os.ReadFile(f)
				buf[len(buf)/2] ^= 0x40
				os.Chmod(f, 0o600)
				os.WriteFile(f, buf, 0o600)
			}
			res := runCLI(t, env, nil, "check")
			if res.code == 0 {
				t.Fatalf("check after the index was %s: exit 0\n%s", damage, res.stdout)
			}
			if !strings.Contains(res.stderr, "repair index") {
				t.Errorf("check does not advise repair index:\n%s\n%s", res.stdout, res.stderr)
			}
			if damage == "deleted" && strings.Contains(res.stdout+res.stderr, "a prune removes them") {
				t.Errorf("check advises a prune that would refuse:\n%s", res.stdout)
			}
			res = runCLI(t, env, nil, "repair", "index")
			if res.code != 0 || !strings.Contains(res.stdout, "index rebuilt: 4 packs") {
				t.Fatalf("repair index: %d\n%s\n%s", res.code, res.stdout, res.stderr)
			}
			if res := runCLI(t, env, nil, "check", "--read-data"); res.code != 0 {
				t.Fatalf("check after repair: %d\n%s\n%s", res.code, res.stdout, res.stderr)
			}
			restic.MustRun(t, dir, testPassword, nil, "check", "--read-data")
			out := restic.MustRun(t, dir, testPassword, nil, "dump", "--path", "/a.bin", "latest", "/a.bin")
			if !bytes.Equal(out.Stdout, data) {
				t.Fatalf("restic dump after repair: %d bytes, want %d", len(out.Stdout), len(data))
			}
			if res := runCLI(t, env, nil, "forget", "--keep-last", "1", "--prune"); res.code != 0 {
				t.Fatalf("forget --prune after repair: %d\n%s", res.code, res.stderr)
			}
			restic.MustRun(t, dir, testPassword, nil, "check", "--read-data")
		})
	}
}
