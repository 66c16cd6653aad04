package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyAddListRemove(t *testing.T) {
	env := newRepoEnv(t, 2)
	pwFile := filepath.Join(t.TempDir(), "new-password")
	if err := os.WriteFile(pwFile, []byte("second password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := runCLI(t, env, nil, "key", "add", "--new-password-file", pwFile, "--user", "ops", "--host", "vault")
	if res.code != 0 || !strings.Contains(res.stdout, "saved new key") {
		t.Fatalf("key add: exit %d: %s%s", res.code, res.stdout, res.stderr)
	}
	// The new password opens the repository; the list marks the key in use.
	env2 := map[string]string{"RESTIC_REPOSITORY": env["RESTIC_REPOSITORY"], "RESTIC_PASSWORD": "second password"}
	res = runCLI(t, env2, nil, "key", "list", "--json")
	var keys []struct {
		Current  bool   `json:"current"`
		ID       string `json:"id"`
		UserName string `json:"userName"`
		HostName string `json:"hostName"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &keys); err != nil || len(keys) != 2 {
		t.Fatalf("key list: %q %v", res.stdout, err)
	}
	var current, other string
	for _, k := range keys {
		if k.Current {
			current = k.ID
			if k.UserName != "ops" || k.HostName != "vault" {
				t.Errorf("new key recorded %s@%s", k.UserName, k.HostName)
			}
		} else {
			other = k.ID
		}
	}
	if current == "" || other == "" {
		t.Fatalf("no current key marked: %+v", keys)
	}
	// The key in use cannot be removed; the other one can.
	if res := runCLI(t, env2, nil, "key", "remove", current); res.code == 0 || !strings.Contains(res.stderr, "in use") {
		t.Fatalf("removing the key in use: exit %d: %s", res.code, res.stderr)
	}
	if res := runCLI(t, env2, nil, "key", "remove", other); res.code != 0 {
		t.Fatalf("key remove: exit %d: %s", res.code, res.stderr)
	}
	// Now the first password no longer opens the repository.
	if res := runCLI(t, env, nil, "snapshots"); res.code != exitWrongPass {
		t.Fatalf("old password after its key was removed: exit %d: %s", res.code, res.stderr)
	}
}

func TestCatObjects(t *testing.T) {
	env := newRepoEnv(t, 2)
	id := backupJSON(t, env, []byte("hello cat"), "--stdin-filename", "f")
	res := runCLI(t, env, nil, "cat", "config")
	var cfg struct {
		Version int    `json:"version"`
		ID      string `json:"id"`
		Pol     string `json:"chunker_polynomial"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &cfg); err != nil || cfg.Version != 2 || len(cfg.ID) != 64 || cfg.Pol == "" {
		t.Fatalf("cat config: %q %v", res.stdout, err)
	}
	res = runCLI(t, env, nil, "cat", "snapshot", id[:8])
	var sn struct {
		Tree  string   `json:"tree"`
		Paths []string `json:"paths"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &sn); err != nil || len(sn.Paths) != 1 || sn.Paths[0] != "/f" {
		t.Fatalf("cat snapshot: %q %v", res.stdout, err)
	}
	res = runCLI(t, env, nil, "cat", "blob", sn.Tree)
	if !strings.HasPrefix(res.stdout, `{"nodes":[{"name":"f","type":"file","mode":420,`) || !strings.HasSuffix(res.stdout, "]}\n") {
		t.Fatalf("cat blob (tree): %q", res.stdout)
	}
	if res := runCLI(t, env, nil, "cat", "blob", strings.Repeat("0", 64)); res.code == 0 || !strings.Contains(res.stderr, "not in the index") {
		t.Fatalf("cat of an unknown blob: exit %d: %s", res.code, res.stderr)
	}
	if res := runCLI(t, env, nil, "cat", "index"); res.code == 0 || !strings.Contains(res.stderr, "needs an ID") {
		t.Fatalf("cat index without ID: exit %d: %s", res.code, res.stderr)
	}
	if res := runCLI(t, env, nil, "cat", "frobs", "x"); res.code == 0 || !strings.Contains(res.stderr, "unknown object type") {
		t.Fatalf("cat unknown type: exit %d: %s", res.code, res.stderr)
	}
}
