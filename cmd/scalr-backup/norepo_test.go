//go:build linux

package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// A missing repository says what is missing (the directory, the bucket, or
// the config in an existing place) and that init creates it; exit 10.
func TestNoRepositoryMessages(t *testing.T) {
	testenv.Integration(t)
	s3 := testenv.StartS3(t)
	env := map[string]string{"RESTIC_PASSWORD": "pw"}
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": s3.KeyID, "AWS_SECRET_ACCESS_KEY": s3.Secret, "AWS_DEFAULT_REGION": testenv.S3Region} {
		env[k] = v
	}
	env["RESTIC_REPOSITORY"] = s3.URL("exists/repo-a")
	if res := runCLI(t, env, nil, "init"); res.code != 0 {
		t.Fatalf("init: %s", res.stderr)
	}
	for _, c := range []struct{ loc, want string }{
		{filepath.Join(t.TempDir(), "nothing"), "the directory does not exist"},
		{s3.URL("no-such-bucket"), "NoSuchBucket"},
		{s3.URL("exists/repo-b"), "the location exists but holds no repository"},
	} {
		env["RESTIC_REPOSITORY"] = c.loc
		res := runCLI(t, env, nil, "snapshots")
		if res.code != exitNoRepo || !strings.Contains(res.stderr, c.want) || !strings.Contains(res.stderr, "scalr-backup init creates the repository") {
			t.Errorf("%s: exit %d: %s", c.loc, res.code, res.stderr)
		}
	}
}
