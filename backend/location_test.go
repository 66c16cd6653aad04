package backend

import (
	"strings"
	"testing"
)

func TestParseLocationAccepted(t *testing.T) {
	tests := []struct {
		in   string
		want Location
	}{
		{"local:/srv/repo", Location{"local", "/srv/repo"}},
		{"local:relative/repo", Location{"local", "relative/repo"}},
		{"local:./repo", Location{"local", "./repo"}},
		{"local:/dir:with:colons", Location{"local", "/dir:with:colons"}},
		{"local:C:\\repo", Location{"local", "C:\\repo"}},
		{"local:sftp:host:/x", Location{"local", "sftp:host:/x"}},
		{"/srv/repo", Location{"local", "/srv/repo"}},
		{"/dir1:foobar/dir2", Location{"local", "/dir1:foobar/dir2"}},
		{"repo", Location{"local", "repo"}},
		{"dir1/dir2", Location{"local", "dir1/dir2"}},
		{"./repo", Location{"local", "./repo"}},
		{"../repo:x", Location{"local", "../repo:x"}},
		{`..\repo:x`, Location{"local", `..\repo:x`}},
		{`\dir1\foobar\dir2`, Location{"local", `\dir1\foobar\dir2`}},
		{`c:\dir1\foobar\dir2`, Location{"local", `c:\dir1\foobar\dir2`}},
		{`C:\Users\x\AppData\Local\Temp\repo`, Location{"local", `C:\Users\x\AppData\Local\Temp\repo`}},
		{"c:/dir1/foobar/dir2", Location{"local", "c:/dir1/foobar/dir2"}},
		{"s3:s3.amazonaws.com/bucket/prefix", Location{"s3", "s3.amazonaws.com/bucket/prefix"}},
		{"s3:https://host:9000/bucket", Location{"s3", "https://host:9000/bucket"}},
		{"s3:http://127.0.0.1:7070/b/p/q", Location{"s3", "http://127.0.0.1:7070/b/p/q"}},
		{"sftp:user@host:/srv/repo", Location{"sftp", "user@host:/srv/repo"}},
		{"sftp:host:relative/repo", Location{"sftp", "host:relative/repo"}},
		{"sftp://user@host:2222//srv/repo", Location{"sftp", "//user@host:2222//srv/repo"}},
		{"sftpdir", Location{"local", "sftpdir"}},
		{"s3bucket/x", Location{"local", "s3bucket/x"}},
	}
	for _, tt := range tests {
		got, err := ParseLocation(tt.in)
		if err != nil {
			t.Errorf("ParseLocation(%q): unexpected error %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseLocation(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseLocationRejected(t *testing.T) {
	tests := []struct {
		in      string
		message string // a fragment the error must contain
	}{
		{"", "empty"},
		{"local:", "empty directory"},
		{"s3:", "nothing after the s3: prefix"},
		{"local", "local:DIR"},
		{"s3", "s3:"},
		{"sftp:", "nothing after the sftp: prefix"},
		{"sftp", "sftp:user@host:/dir"},
		{"rest:https://host:8000/", "not supported by scalr-backup: use s3:…, sftp:… or a local path"},
		{"rest:https://host:8000/", "not supported by scalr-backup"},
		{"b2:bucket:path", "not supported by scalr-backup"},
		{"azure:container:/path", "not supported by scalr-backup"},
		{"gs:bucket:/path", "not supported by scalr-backup"},
		{"swift:container:/path", "not supported by scalr-backup"},
		{"rclone:remote:path", "not supported by scalr-backup"},
		{"foobar:xxx", "local: prefix"},
		{"foobar:/dir/dir2", "local: prefix"},
		{"./dir:x", "local: prefix"},
		{"S3:host/bucket", "local: prefix"},
		{"c:", "local: prefix"},
		{"c:dir", "local: prefix"},
	}
	for _, tt := range tests {
		got, err := ParseLocation(tt.in)
		if err == nil {
			t.Errorf("ParseLocation(%q) = %+v, want an error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.message) {
			t.Errorf("ParseLocation(%q) error %q does not mention %q", tt.in, err, tt.message)
		}
		if got != (Location{}) {
			t.Errorf("ParseLocation(%q) returned %+v alongside an error", tt.in, got)
		}
	}
}

func TestLocationString(t *testing.T) {
	for _, s := range []string{"local:/srv/repo", "s3:https://host:9000/bucket", "sftp:u@h:/srv/repo"} {
		loc, err := ParseLocation(s)
		if err != nil {
			t.Fatal(err)
		}
		if loc.String() != s {
			t.Errorf("String() = %q, want %q", loc.String(), s)
		}
	}
	loc, err := ParseLocation("/srv/repo")
	if err != nil {
		t.Fatal(err)
	}
	if loc.String() != "local:/srv/repo" {
		t.Errorf("String() = %q", loc.String())
	}
}
