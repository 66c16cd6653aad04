//go:build linux

package main

// S3 credentials come from the sources restic reads: the AWS_* variables,
// a shared credentials file with a profile, a container role; and the
// repository location from RESTIC_REPOSITORY_FILE / --repository-file.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

func TestS3CredentialSources(t *testing.T) {
	testenv.Integration(t)
	s3 := testenv.StartS3(t)
	home := t.TempDir()
	pwFile := filepath.Join(home, "pw")
	if err := os.WriteFile(pwFile, []byte("credential sources\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"HOME=" + home, "RESTIC_PASSWORD_FILE=" + pwFile, "AWS_DEFAULT_REGION=" + testenv.S3Region}
	noSecret := func(t *testing.T, res result) {
		t.Helper()
		if strings.Contains(res.stdout+res.stderr, s3.Secret) {
			t.Fatalf("the secret is in the output")
		}
	}

	// A shared credentials file: the default profile is wrong, "backup"
	// is right.
	creds := filepath.Join(home, "aws-credentials")
	content := fmt.Sprintf("[default]\naws_access_key_id = WRONGKEY\naws_secret_access_key = wrong-secret\n\n[backup]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3.KeyID, s3.Secret)
	if err := os.WriteFile(creds, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	loc := s3.URL("credsources")
	fileEnv := append(append([]string{}, base...), "RESTIC_REPOSITORY="+loc, "AWS_SHARED_CREDENTIALS_FILE="+creds, "AWS_PROFILE=backup")
	res := runBinaryEnv(t, fileEnv, "init")
	noSecret(t, res)
	if res.code != 0 {
		t.Fatalf("init with a credentials file: %d %s", res.code, res.stderr)
	}
	res = runBinaryEnv(t, fileEnv, "snapshots")
	if res.code != 0 {
		t.Fatalf("snapshots with a credentials file: %d %s", res.code, res.stderr)
	}
	// The same file in the default place (~/.aws/credentials), profile
	// from AWS_PROFILE; restic reads it the same way.
	if err := os.MkdirAll(filepath.Join(home, ".aws"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(creds, filepath.Join(home, ".aws", "credentials")); err != nil {
		t.Fatal(err)
	}
	homeEnv := append(append([]string{}, base...), "RESTIC_REPOSITORY="+loc, "AWS_PROFILE=backup")
	if res := runBinaryEnv(t, homeEnv, "snapshots"); res.code != 0 {
		t.Fatalf("snapshots with ~/.aws/credentials: %d %s", res.code, res.stderr)
	}
	r := testenv.Restic(t, testenv.Restic0181).WithEnv("HOME="+home, "AWS_PROFILE=backup", "AWS_DEFAULT_REGION="+testenv.S3Region,
		"RESTIC_PASSWORD_FILE="+pwFile)
	r.MustRun(t, loc, "", nil, "cat", "config")
	// The wrong profile is refused, naming the status.
	res = runBinaryEnv(t, append(append([]string{}, base...), "RESTIC_REPOSITORY="+loc), "snapshots")
	noSecret(t, res)
	if res.code == 0 || !strings.Contains(res.stderr, "access key") && !strings.Contains(res.stderr, "InvalidAccessKeyId") {
		t.Fatalf("default profile (wrong keys): %d %s", res.code, res.stderr)
	}
	// A profile that is not in the file is named.
	res = runBinaryEnv(t, append(append([]string{}, base...), "RESTIC_REPOSITORY="+loc, "AWS_PROFILE=nope"), "snapshots")
	if res.code == 0 || !strings.Contains(res.stderr, "profile nope") {
		t.Fatalf("missing profile: %d %s", res.code, res.stderr)
	}
	os.Remove(filepath.Join(home, ".aws", "credentials"))

	// A container role: the credentials endpoint (ECS style) on loopback.
	served := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		json.NewEncoder(w).Encode(map[string]string{
			"AccessKeyId": s3.KeyID, "SecretAccessKey": s3.Secret,
			"Expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		})
	}))
	defer srv.Close()
	roleEnv := append(append([]string{}, base...), "RESTIC_REPOSITORY="+loc, "AWS_CONTAINER_CREDENTIALS_FULL_URI="+srv.URL+"/creds")
	res = runBinaryEnv(t, roleEnv, "snapshots")
	noSecret(t, res)
	if res.code != 0 || served == 0 {
		t.Fatalf("container role: %d (endpoint asked %d times) %s", res.code, served, res.stderr)
	}

	// No source at all: an error that lists them, at once.
	start := time.Now()
	res = runBinaryEnv(t, append(append([]string{}, base...), "RESTIC_REPOSITORY="+loc), "snapshots")
	if res.code == 0 || !strings.Contains(res.stderr, "no credentials") || !strings.Contains(res.stderr, "AWS_SHARED_CREDENTIALS_FILE") || time.Since(start) > 5*time.Second {
		t.Fatalf("no credentials: %d in %s: %s", res.code, time.Since(start), res.stderr)
	}

	// RESTIC_REPOSITORY_FILE and --repository-file, trimmed as restic does.
	repoFile := filepath.Join(home, "repo-location")
	if err := os.WriteFile(repoFile, []byte("  "+loc+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keysEnv := append(append([]string{}, base...), s3.Env()...)
	if res := runBinaryEnv(t, append(keysEnv, "RESTIC_REPOSITORY_FILE="+repoFile), "snapshots"); res.code != 0 {
		t.Fatalf("RESTIC_REPOSITORY_FILE: %d %s", res.code, res.stderr)
	}
	if res := runBinaryEnv(t, keysEnv, "snapshots", "--repository-file", repoFile); res.code != 0 {
		t.Fatalf("--repository-file: %d %s", res.code, res.stderr)
	}
	res = runBinaryEnv(t, append(keysEnv, "RESTIC_REPOSITORY_FILE="+repoFile), "snapshots", "-r", loc)
	if res.code == 0 || !strings.Contains(res.stderr, "mutually exclusive") {
		t.Fatalf("both a repository and a repository file: %d %s", res.code, res.stderr)
	}
}
