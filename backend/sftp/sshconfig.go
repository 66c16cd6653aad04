package sftp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// hostSettings are the few ~/.ssh/config keywords this backend reads for
// one host alias. Everything else in the file (Match blocks, Include,
// ProxyJump, …) is not read; the README says so.
type hostSettings struct {
	HostName      string
	Port          string
	User          string
	IdentityFiles []string
}

// parseSSHConfig reads OpenSSH client configuration from r and returns the
// settings that apply to alias, with OpenSSH's rules for the subset: a
// keyword and its value separated by spaces or '=', keywords in any case,
// '#' comments, values in double quotes; "Host" starts a block that applies
// when one of its patterns (with * and ?) matches alias and none of its
// negated ("!") patterns does; settings before the first Host apply to
// every host; for HostName, Port and User the first value found wins, and
// every IdentityFile found is kept, in order. A "Match" block is skipped
// whole (its conditions are not evaluated). name is for error messages.
func parseSSHConfig(r io.Reader, name, alias string) (hostSettings, error) {
	var hs hostSettings
	active := true
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, value, err := splitKeyword(line)
		if err != nil {
			return hs, fmt.Errorf("%s line %d: %w", name, lineNo, err)
		}
		switch strings.ToLower(key) {
		case "host":
			active = hostMatches(strings.Fields(value), alias)
			continue
		case "match":
			active = false
			continue
		}
		if !active {
			continue
		}
		value = unquote(value)
		switch strings.ToLower(key) {
		case "hostname":
			if hs.HostName == "" {
				hs.HostName = value
			}
		case "port":
			if hs.Port == "" {
				hs.Port = value
			}
		case "user":
			if hs.User == "" {
				hs.User = value
			}
		case "identityfile":
			hs.IdentityFiles = append(hs.IdentityFiles, value)
		}
	}
	if err := sc.Err(); err != nil {
		return hs, fmt.Errorf("read %s: %w", name, err)
	}
	return hs, nil
}

// splitKeyword splits "Keyword value" or "Keyword=value".
func splitKeyword(line string) (key, value string, err error) {
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return "", "", fmt.Errorf("%q has no value", line)
	}
	key = line[:i]
	value = strings.TrimSpace(line[i:])
	value = strings.TrimSpace(strings.TrimPrefix(value, "="))
	if value == "" {
		return "", "", fmt.Errorf("%q has no value", key)
	}
	return key, value, nil
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// hostMatches applies a Host line's patterns to alias.
func hostMatches(patterns []string, alias string) bool {
	matched := false
	for _, p := range patterns {
		p = unquote(p)
		negated := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		ok, err := path.Match(globOnly(p), strings.ToLower(alias))
		if err != nil || !ok {
			continue
		}
		if negated {
			return false
		}
		matched = true
	}
	return matched
}

// globOnly lowers p (host names match without regard to case) and escapes
// what path.Match would read as more than OpenSSH's * and ?.
func globOnly(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`)
	return r.Replace(strings.ToLower(p))
}

// expandTokens expands the tokens OpenSSH allows in HostName and
// IdentityFile that this backend knows: %% %h (remote host) %r (remote
// user) %u (local user) %d (home) and a leading ~. Another token is an
// error naming it.
func expandTokens(s string, vals map[byte]string, home string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("%q ends with a lone %%", s)
		}
		i++
		if s[i] == '%' {
			b.WriteByte('%')
			continue
		}
		v, ok := vals[s[i]]
		if !ok {
			return "", fmt.Errorf("%q: token %%%c is not supported here", s, s[i])
		}
		b.WriteString(v)
	}
	return expandHome(b.String(), home), nil
}

// applySSHConfig reads HOME/.ssh/config (when it exists) and fills what
// the location and the options left open: the host name to dial, the port,
// the user and, without -o sftp.identity, the identity files. localUser is
// the name of the user running the process. The Host field keeps the alias
// for messages and known_hosts.
func (c *Config) applySSHConfig(ctx context.Context, localUser string) (dialHost string, err error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var hs hostSettings
	name := path.Join(c.Home, ".ssh", "config")
	if c.Home != "" {
		f, err := os.Open(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return "", fmt.Errorf("sftp: %w", err)
		default:
			hs, err = parseSSHConfig(f, name, c.Host)
			f.Close()
			if err != nil {
				return "", fmt.Errorf("sftp: %w", err)
			}
		}
	}
	if c.User == "" {
		c.User = hs.User
	}
	if c.User == "" {
		c.User = localUser
	}
	if c.Port == "" {
		c.Port = hs.Port
	}
	dialHost = c.Host
	vals := map[byte]string{'h': c.Host, 'r': c.User, 'u': localUser, 'd': c.Home}
	if hs.HostName != "" {
		h, err := expandTokens(hs.HostName, vals, c.Home)
		if err != nil {
			return "", fmt.Errorf("sftp: %s: HostName %w", name, err)
		}
		dialHost = h
		vals['h'] = h
	}
	if len(c.Identities) == 0 {
		for _, id := range hs.IdentityFiles {
			p, err := expandTokens(id, vals, c.Home)
			if err != nil {
				return "", fmt.Errorf("sftp: %s: IdentityFile %w", name, err)
			}
			c.Identities = append(c.Identities, p)
		}
	}
	return dialHost, nil
}
