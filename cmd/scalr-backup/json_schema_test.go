package main

// Every --json output follows one convention: one JSON value per line;
// object keys in snake_case, except the fields restic itself names
// otherwise where the command is restic's (key list: userName, hostName);
// IDs in full (64 hex digits) under "id" and "*_id" keys, "short_id" the
// only abbreviation. The repository commands are checked here; run --json
// in TestNightlyRunJSON; discover, pg-backup, drill, restore, previous and
// retire against real Postgres in TestDrillLeavesDumpLatestAndHostIdentity.

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	snakeKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	fullID   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// resticKeys are restic's own camelCase names, kept where the command
	// is restic's.
	resticKeys = map[string]bool{"userName": true, "hostName": true}
)

// checkJSONConvention checks one command's --json output.
func checkJSONConvention(t *testing.T, what, out string) {
	t.Helper()
	out = strings.TrimRight(out, "\n")
	if out == "" {
		t.Errorf("%s: no JSON output", what)
		return
	}
	for i, line := range strings.Split(out, "\n") {
		var v any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("%s: line %d is not one JSON value (%v): %q", what, i+1, err, line)
			continue
		}
		walkJSON(t, what, "", v)
	}
}

func walkJSON(t *testing.T, what, path string, v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			p := path + "." + k
			if !snakeKey.MatchString(k) && !resticKeys[k] {
				t.Errorf("%s: key %s is not snake_case", what, p)
			}
			if s, ok := val.(string); ok && (k == "id" || strings.HasSuffix(k, "_id")) && k != "short_id" &&
				k != "container_id" && k != "image_id" && !fullID.MatchString(s) {
				t.Errorf("%s: %s = %q is not a full ID", what, p, s)
			}
			walkJSON(t, what, p, val)
		}
	case []any:
		for i, e := range x {
			walkJSON(t, what, fmt.Sprintf("%s[%d]", path, i), e)
		}
	}
}

func TestJSONConvention(t *testing.T) {
	env := newRepoEnv(t, 2)
	run := func(stdin []byte, args ...string) string {
		t.Helper()
		var res result
		if stdin != nil {
			res = runCLI(t, env, strings.NewReader(string(stdin)), args...)
		} else {
			res = runCLI(t, env, nil, args...)
		}
		if res.code != 0 {
			t.Fatalf("%s: exit %d: %s", strings.Join(args, " "), res.code, res.stderr)
		}
		return res.stdout
	}
	for _, args := range [][]string{{"version", "--json"}, {"init", "--json", "-r", filepath.Join(t.TempDir(), "new")}} {
		checkJSONConvention(t, strings.Join(args, " "), run(nil, args...))
	}
	for i := 0; i < 3; i++ {
		checkJSONConvention(t, "backup --stdin --json", run(randomBytes(int64(i), 1<<20), "backup", "--stdin", "--json", "--stdin-filename", "f.bin"))
	}
	for _, args := range [][]string{
		{"snapshots", "--json"},
		{"key", "list", "--json"},
		{"forget", "--keep-last", "1", "--dry-run", "--json"},
		{"forget", "--keep-last", "1", "--json"},
		{"prune", "--json"},
		{"check", "--json"},
		{"repair", "index", "--json"},
	} {
		checkJSONConvention(t, strings.Join(args, " "), run(nil, args...))
	}
	// The checker itself catches what the convention forbids.
	inner := &testing.T{}
	walkJSON(inner, "x", "", map[string]any{"UsedBlobs": 1})
	walkJSON(inner, "x", "", map[string]any{"id": "1a2b3c4d"})
	if !inner.Failed() {
		t.Error("the convention check accepts Go field names and short IDs")
	}
}
