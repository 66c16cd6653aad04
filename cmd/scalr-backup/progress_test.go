package main

import (
	"regexp"
	"strings"
	"testing"
)

// Without a terminal, progress lines appear only under RESTIC_PROGRESS_FPS,
// as with restic; stdout stays the data (dump) or the report (check).
func TestProgressWithoutTerminal(t *testing.T) {
	env := newRepoEnv(t, 2)
	data := randomBytes(3, 20<<20)
	backupJSON(t, env, data, "--stdin-filename", "big.bin")

	res := runCLI(t, env, nil, "check", "--read-data")
	if res.code != 0 || strings.Contains(res.stderr, "%") {
		t.Fatalf("check without RESTIC_PROGRESS_FPS: %d, stderr %q", res.code, res.stderr)
	}
	res = runCLI(t, env, nil, "dump", "latest", "/big.bin")
	if res.code != 0 || res.stderr != "" || len(res.stdout) != len(data) {
		t.Fatalf("dump without RESTIC_PROGRESS_FPS: %d, %d bytes, stderr %q", res.code, len(res.stdout), res.stderr)
	}

	env["RESTIC_PROGRESS_FPS"] = "1000"
	res = runCLI(t, env, nil, "check", "--read-data")
	if res.code != 0 || !regexp.MustCompile(`(?m)^\[0:\d\d\] 100\.00%  \d+ / \d+ packs read$`).MatchString(res.stderr) ||
		!regexp.MustCompile(`(?m)^\[0:\d\d\] 100\.00%  \d+ / \d+ packs$`).MatchString(res.stderr) {
		t.Fatalf("check progress: %d\n%s", res.code, res.stderr)
	}
	if strings.Contains(res.stdout, "%") {
		t.Errorf("progress on stdout:\n%s", res.stdout)
	}
	res = runCLI(t, env, nil, "dump", "latest", "/big.bin")
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	if res.code != 0 || len(res.stdout) != len(data) || len(lines) < 2 ||
		!strings.HasSuffix(lines[len(lines)-1], "100.00% dumped 20.000 MiB / 20.000 MiB") {
		t.Fatalf("dump progress: %d, %d bytes\n%s", res.code, len(res.stdout), res.stderr)
	}
	// --quiet and --json print none.
	if res := runCLI(t, env, nil, "check", "--read-data", "--quiet"); res.code != 0 || res.stderr != "" {
		t.Fatalf("check --quiet: %d %q", res.code, res.stderr)
	}
}
