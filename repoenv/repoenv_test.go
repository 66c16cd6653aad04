package repoenv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLocation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "loc")
	if err := os.WriteFile(file, []byte("  /srv/repo \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		s       Settings
		env     map[string]string
		want    string
		wantErr string
	}{
		{"env", Settings{}, map[string]string{"RESTIC_REPOSITORY": "s3:host/b"}, "s3:host/b", ""},
		{"flag wins", Settings{Repository: "/a"}, map[string]string{"RESTIC_REPOSITORY": "/b"}, "/a", ""},
		{"file", Settings{}, map[string]string{"RESTIC_REPOSITORY_FILE": file}, "/srv/repo", ""},
		{"both refused", Settings{RepositoryFile: file}, map[string]string{"RESTIC_REPOSITORY": "/b"}, "", "mutually exclusive"},
		{"empty file", Settings{RepositoryFile: empty}, nil, "", "is empty"},
		{"missing file", Settings{RepositoryFile: filepath.Join(dir, "none")}, nil, "", "read the repository file"},
		{"none", Settings{}, nil, "", "no repository given"},
	}
	for _, c := range cases {
		c.s.Getenv = envOf(c.env)
		got, err := c.s.Location()
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: %q, %v; want an error saying %q", c.name, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

func TestPasswordSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("  from file \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	env := map[string]string{}
	s := &Settings{Getenv: envOf(env)}
	if _, err := s.Password(ctx); err == nil || !strings.Contains(err.Error(), "no password given") {
		t.Errorf("no source and no prompt: %v", err)
	}
	s.Prompt = func(context.Context) (string, error) { return "typed", nil }
	if pw, err := s.Password(ctx); err != nil || pw != "typed" {
		t.Errorf("prompt: %q %v", pw, err)
	}
	env["RESTIC_PASSWORD"] = "  from env  "
	if pw, err := s.Password(ctx); err != nil || pw != "  from env  " {
		t.Errorf("RESTIC_PASSWORD is taken as it is: %q %v", pw, err)
	}
	env["RESTIC_PASSWORD_FILE"] = file
	if pw, err := s.Password(ctx); err != nil || pw != "from file" {
		t.Errorf("file: %q %v", pw, err)
	}
	env["RESTIC_PASSWORD_COMMAND"] = "printf '  from command\\n\\n'"
	if _, err := s.Password(ctx); err == nil {
		t.Error("a file and a command together were accepted")
	}
	delete(env, "RESTIC_PASSWORD_FILE")
	if pw, err := s.Password(ctx); err != nil || pw != "from command" {
		t.Errorf("command: %q %v", pw, err)
	}
	env["RESTIC_PASSWORD_COMMAND"] = "echo secret-output; exit 3"
	_, err := s.Password(ctx)
	if err == nil || strings.Contains(err.Error(), "secret-output") {
		t.Errorf("a failing command: %v (must fail, and never show its output)", err)
	}
}

func TestPasswordFileEncodings(t *testing.T) {
	cases := map[string]struct{ content, want string }{
		"utf8-bom":    {"\xef\xbb\xbfpw-bom\n", "pw-bom"},
		"utf16le-bom": {"\xff\xfep\x00w\x00\n\x00", "pw"},
		"crlf":        {"pw\r\n", "pw"},
	}
	for name, c := range cases {
		got, err := passwordFromFileBytes([]byte(c.content))
		if err != nil || got != c.want {
			t.Errorf("%s: %q %v, want %q", name, got, err, c.want)
		}
	}
}

func TestRepoOptions(t *testing.T) {
	s := &Settings{Getenv: envOf(map[string]string{"RESTIC_COMPRESSION": "max", "RESTIC_PACK_SIZE": "32"})}
	o, err := s.RepoOptions()
	if err != nil || o.Compression != repo.CompressionMax || o.PackSize != 32<<20 {
		t.Errorf("from the environment: %+v %v", o, err)
	}
	s.Compression, s.PackSizeMiB = "off", 64
	if o, err = s.RepoOptions(); err != nil || o.Compression != repo.CompressionOff || o.PackSize != 64<<20 {
		t.Errorf("set fields win: %+v %v", o, err)
	}
	s = &Settings{Getenv: envOf(map[string]string{"RESTIC_PACK_SIZE": "16MiB"})}
	if _, err := s.RepoOptions(); err == nil || !strings.Contains(err.Error(), "RESTIC_PACK_SIZE") {
		t.Errorf("a bad RESTIC_PACK_SIZE: %v", err)
	}
	s = &Settings{Compression: "best"}
	if _, err := s.RepoOptions(); err == nil {
		t.Error("an unknown compression was accepted")
	}
}

// TestOpenOrInit: no repository and no create is an error naming it; with
// create, one is made once; a wrong password never creates another.
func TestOpenOrInit(t *testing.T) {
	ctx := context.Background()
	loc := filepath.Join(t.TempDir(), "repo")
	env := map[string]string{"RESTIC_REPOSITORY": loc, "RESTIC_PASSWORD": "pw"}
	s := &Settings{Getenv: envOf(env), Init: repo.InitOptions{KDF: repotest.FastKDF()}}
	if _, err := s.OpenOrInit(ctx, false); !errors.Is(err, backend.ErrNoRepository) {
		t.Fatalf("no repository, no create: %v; want ErrNoRepository", err)
	}
	if _, err := os.Stat(loc); !os.IsNotExist(err) {
		t.Fatalf("open without create made %s: %v", loc, err)
	}
	o, err := s.OpenOrInit(ctx, true)
	if err != nil || !o.Created {
		t.Fatalf("create: %+v %v", o, err)
	}
	id := o.Repo.Config().ID
	if err := o.Repo.Close(); err != nil {
		t.Fatal(err)
	}
	o, err = s.OpenOrInit(ctx, true)
	if err != nil || o.Created || o.Repo.Config().ID != id {
		t.Fatalf("second open: %+v %v; want the same repository, not created", o, err)
	}
	_ = o.Repo.Close()
	env["RESTIC_PASSWORD"] = "wrong"
	o, err = s.OpenOrInit(ctx, true)
	if !errors.Is(err, repo.ErrWrongPassword) || o.Repo != nil {
		t.Fatalf("wrong password: %+v %v; want ErrWrongPassword", o, err)
	}
	if o.Requests.ClassB() == 0 {
		t.Error("a failed open reports no requests")
	}
	keys, _ := os.ReadDir(filepath.Join(loc, "keys"))
	if len(keys) != 1 {
		t.Errorf("%d key files after a wrong password; want 1", len(keys))
	}
}

// TestOpen opens a repository made by repotest, from the environment.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	be, err := (&Settings{Repository: dir}).OpenBackend(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	repotest.Init(t, be, "pw", repo.InitOptions{}, repo.Options{})
	s := &Settings{Getenv: envOf(map[string]string{"RESTIC_REPOSITORY": dir, "RESTIC_PASSWORD": "pw"})}
	r, err := s.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s.Getenv = envOf(map[string]string{"RESTIC_REPOSITORY": dir})
	var told int
	s.Opened = func(*open.Opened) { told++ }
	if _, err := s.Open(context.Background()); err == nil || !strings.Contains(err.Error(), "no password") {
		t.Errorf("no password: %v", err)
	}
	if told != 1 {
		t.Errorf("Opened told %d times of a storage opened before a failure; want 1", told)
	}
}
