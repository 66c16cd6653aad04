package backend

import (
	"errors"
	"fmt"
	"strings"
)

// Location is a parsed repository location: which kind of backend holds the
// repository and the backend-specific rest of the string.
type Location struct {
	// Scheme is "local", "s3" or "sftp".
	Scheme string
	// Path is a directory for "local" and, for "s3" and "sftp", everything
	// after the "s3:" or "sftp:" prefix, unchanged (the backend parses it
	// further: "user@host:/dir", or "//user@host:port/dir" from the URL
	// form "sftp://…").
	Path string
}

// String returns the location in the form ParseLocation accepts.
func (l Location) String() string {
	return l.Scheme + ":" + l.Path
}

// unsupportedSchemes are the location prefixes restic understands but this
// project does not implement.
var unsupportedSchemes = map[string]bool{
	"rest":   true,
	"b2":     true,
	"azure":  true,
	"gs":     true,
	"swift":  true,
	"rclone": true,
}

// ParseLocation interprets a repository location the way restic does for the
// backends this project supports: "local:DIR", "s3:…", "sftp:…", or a plain
// directory.
//
// As in restic, the text before the first ':' picks the backend. A string
// with a ':' whose prefix is not a known backend is accepted as a directory
// only when it clearly is a path (it starts with "/", "\", "../", "..\" or
// a drive such as "C:\" or "C:/"); anything else is ambiguous and needs an
// explicit "local:" prefix. Backend names restic knows but this project does
// not implement (rest, b2, azure, gs, swift, rclone) are rejected.
func ParseLocation(s string) (Location, error) {
	if s == "" {
		return Location{}, errors.New("empty repository location")
	}

	// Like restic, the scheme is everything before the first ':', or the
	// whole string when there is none (so a bare "s3" is not a directory).
	scheme, rest, hasColon := strings.Cut(s, ":")
	switch {
	case scheme == "local":
		if !hasColon {
			return Location{}, fmt.Errorf("invalid repository location %q: use local:DIR, or ./local for a directory named local", s)
		}
		if rest == "" {
			return Location{}, fmt.Errorf("invalid repository location %q: empty directory", s)
		}
		return Location{Scheme: "local", Path: rest}, nil
	case scheme == "s3":
		if !hasColon {
			return Location{}, fmt.Errorf("invalid repository location %q: use s3:…, or ./s3 for a directory named s3", s)
		}
		if rest == "" {
			return Location{}, fmt.Errorf("invalid repository location %q: nothing after the s3: prefix", s)
		}
		return Location{Scheme: "s3", Path: rest}, nil
	case scheme == "sftp":
		if !hasColon {
			return Location{}, fmt.Errorf("invalid repository location %q: use sftp:user@host:/dir, or ./sftp for a directory named sftp", s)
		}
		if rest == "" {
			return Location{}, fmt.Errorf("invalid repository location %q: nothing after the sftp: prefix", s)
		}
		return Location{Scheme: "sftp", Path: rest}, nil
	case unsupportedSchemes[scheme]:
		return Location{}, fmt.Errorf("repository location %q: the %s backend is not supported by scalr-backup: use s3:…, sftp:… or a local path", s, scheme)
	}

	if hasColon && !looksLikePath(s) {
		return Location{}, fmt.Errorf("invalid repository location %q: unknown backend %q; if the repository is in a local directory, add a local: prefix", s, scheme)
	}
	return Location{Scheme: "local", Path: s}, nil
}

// looksLikePath reports whether s is unmistakably a file system path even
// though it contains a ':' (restic's rule, applied on every platform).
func looksLikePath(s string) bool {
	for _, p := range []string{"/", `\`, "../", `..\`} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	if len(s) < 3 {
		return false
	}
	drive := s[0]
	isLetter := drive >= 'a' && drive <= 'z' || drive >= 'A' && drive <= 'Z'
	return isLetter && s[1] == ':' && (s[2] == '\\' || s[2] == '/')
}
