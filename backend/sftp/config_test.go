package sftp

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		in                     string
		user, host, port, path string
		location               string // Location() when it differs from "sftp:"+in
	}{
		{"user@host:/srv/repo", "user", "host", "", "/srv/repo", ""},
		{"user@host:relative/repo", "user", "host", "", "relative/repo", ""},
		{"host:/srv/repo/", "", "host", "", "/srv/repo", "sftp:host:/srv/repo"},
		{"u@x@host:repo", "u@x", "host", "", "repo", ""},
		{"user@[::1]:/srv/repo", "user", "::1", "", "/srv/repo", ""},
		{"user@host:.", "user", "host", "", ".", ""},
		{"//user@host:2222//srv/repo", "user", "host", "2222", "/srv/repo", "sftp://user@host:2222//srv/repo"},
		{"//user@host:23/backups/repo", "user", "host", "23", "backups/repo", "sftp://user@host:23/backups/repo"},
		{"//host//srv/repo", "", "host", "", "/srv/repo", "sftp:host:/srv/repo"},
		{"//user@[::1]:2222//r", "user", "::1", "2222", "/r", "sftp://user@[::1]:2222//r"},
	}
	for _, tt := range tests {
		cfg, err := ParseConfig(tt.in)
		if err != nil {
			t.Errorf("ParseConfig(%q): %v", tt.in, err)
			continue
		}
		got := []string{cfg.User, cfg.Host, cfg.Port, cfg.Path}
		want := []string{tt.user, tt.host, tt.port, tt.path}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseConfig(%q) = user, host, port, path %q, want %q", tt.in, got, want)
		}
		wantLoc := tt.location
		if wantLoc == "" {
			wantLoc = "sftp:" + tt.in
		}
		if cfg.Location() != wantLoc {
			t.Errorf("ParseConfig(%q).Location() = %q, want %q", tt.in, cfg.Location(), wantLoc)
		}
		if cfg.Connections != DefaultConnections {
			t.Errorf("ParseConfig(%q): %d connections", tt.in, cfg.Connections)
		}
	}
}

func TestParseConfigRejected(t *testing.T) {
	tests := []struct{ in, message string }{
		{"user@host", "no ':' after the host"},
		{"user@host:", "names no folder"},
		{"user@:/srv", "no host"},
		{"user@host:~/repo", "starts with ~"},
		{"user@[::1/srv", "unclosed ["},
		{"//user:secret@host//srv", "password in the location is not supported"},
		{"//user@host:99999//srv", "not a number from 1 to 65535"},
		{"//user@host", "names no folder"},
		{"//user@host/", "names no folder"},
	}
	for _, tt := range tests {
		_, err := ParseConfig(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.message) {
			t.Errorf("ParseConfig(%q) error %v, want one mentioning %q", tt.in, err, tt.message)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseConfig(%q) error repeats the password: %v", tt.in, err)
		}
	}
}

func TestApplyOption(t *testing.T) {
	var c Config
	for _, kv := range [][2]string{
		{"sftp.identity", "/keys/a"}, {"sftp.identity", "/keys/b"},
		{"sftp.known-hosts", "/kh"}, {"sftp.connections", "3"},
	} {
		if err := c.ApplyOption(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(c.Identities, []string{"/keys/a", "/keys/b"}) || !reflect.DeepEqual(c.KnownHosts, []string{"/kh"}) || c.Connections != 3 {
		t.Errorf("after options: %+v", c)
	}
	for _, kv := range [][2]string{
		{"sftp.command", "ssh host -s sftp"}, {"sftp.args", "-i key"}, {"sftp.connections", "0"},
		{"sftp.identity", ""}, {"sftp.password", "x"},
	} {
		if err := c.ApplyOption(kv[0], kv[1]); err == nil {
			t.Errorf("option %s=%s accepted", kv[0], kv[1])
		}
	}
}

const sampleSSHConfig = `
# defaults for everything
IdentityFile ~/.ssh/global_key

Host box
    HostName u123456.your-storagebox.de
    Port 23
    User u123456
    IdentityFile ~/.ssh/box_%r
    Port 2222

Host *.example.org !bad.example.org
  User=web
  Port = 2200

Match host box
  Port 9999

Host box other
  User second
  IdentityFile "/keys/with space"
`

func TestParseSSHConfig(t *testing.T) {
	tests := []struct {
		alias string
		want  hostSettings
	}{
		{"box", hostSettings{HostName: "u123456.your-storagebox.de", Port: "23", User: "u123456",
			IdentityFiles: []string{"~/.ssh/global_key", "~/.ssh/box_%r", "/keys/with space"}}},
		{"BOX", hostSettings{HostName: "u123456.your-storagebox.de", Port: "23", User: "u123456",
			IdentityFiles: []string{"~/.ssh/global_key", "~/.ssh/box_%r", "/keys/with space"}}},
		{"www.example.org", hostSettings{Port: "2200", User: "web", IdentityFiles: []string{"~/.ssh/global_key"}}},
		{"bad.example.org", hostSettings{IdentityFiles: []string{"~/.ssh/global_key"}}},
		{"other", hostSettings{User: "second", IdentityFiles: []string{"~/.ssh/global_key", "/keys/with space"}}},
	}
	for _, tt := range tests {
		got, err := parseSSHConfig(strings.NewReader(sampleSSHConfig), "config", tt.alias)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("settings for %s = %+v, want %+v", tt.alias, got, tt.want)
		}
	}
	if _, err := parseSSHConfig(strings.NewReader("Host x\n  Port\n"), "cfg", "x"); err == nil || !strings.Contains(err.Error(), "cfg line 2") {
		t.Errorf("keyword without value: %v", err)
	}
}

// TestApplySSHConfig: the alias in the location picks HostName, Port,
// User and IdentityFile from HOME/.ssh/config; the location and the
// options win over the file.
func TestApplySSHConfig(t *testing.T) {
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(sampleSSHConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("box:backups/repo")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Home = home
	host, err := cfg.applySSHConfig(context.Background(), "me")
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := []string{filepath.Join(home, ".ssh/global_key"), filepath.Join(home, ".ssh/box_u123456"), "/keys/with space"}
	if host != "u123456.your-storagebox.de" || cfg.Port != "23" || cfg.User != "u123456" || !reflect.DeepEqual(cfg.Identities, wantIDs) {
		t.Errorf("box: dial %s, port %s, user %s, identities %q", host, cfg.Port, cfg.User, cfg.Identities)
	}
	if cfg.Location() != "sftp://u123456@box:23/backups/repo" {
		t.Errorf("Location() = %q", cfg.Location())
	}

	cfg, _ = ParseConfig("//admin@box:2022//srv/repo")
	cfg.Home = home
	_ = cfg.ApplyOption("sftp.identity", "/mine")
	if _, err := cfg.applySSHConfig(context.Background(), "me"); err != nil {
		t.Fatal(err)
	}
	if cfg.Port != "2022" || cfg.User != "admin" || !reflect.DeepEqual(cfg.Identities, []string{"/mine"}) {
		t.Errorf("location and options must win: %+v", cfg)
	}

	cfg, _ = ParseConfig("nowhere:/srv")
	cfg.Home = t.TempDir() // no .ssh at all
	host, err = cfg.applySSHConfig(context.Background(), "me")
	if err != nil || host != "nowhere" || cfg.User != "me" || cfg.Port != "" {
		t.Errorf("without a config file: host %s, %+v, %v", host, cfg, err)
	}
}
