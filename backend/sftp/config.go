package sftp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Config says where an SFTP repository lives and how to reach it. Nothing
// in it is secret: keys stay in the files (or the agent) it names.
type Config struct {
	// User is the login name; empty takes ~/.ssh/config's User for the
	// host, else the name of the user running the process.
	User string
	// Host is the host name or address as written in the location; it is
	// also the alias looked up in ~/.ssh/config.
	Host string
	// Port is the TCP port; empty takes ~/.ssh/config's Port, else 22.
	Port string
	// Path is the repository's folder on the server: absolute when it
	// starts with '/', else relative to the folder the server starts the
	// session in (the login's home on most servers).
	Path string

	// Identities are private key files named with -o sftp.identity (in
	// order); when empty, ~/.ssh/config's IdentityFile for the host, else
	// ~/.ssh/id_ed25519, id_ecdsa and id_rsa, whichever exist.
	Identities []string
	// KnownHosts are the known_hosts files host keys are checked against
	// (-o sftp.known-hosts, repeatable); empty means ~/.ssh/known_hosts.
	KnownHosts []string
	// Connections bounds the operations in flight at once over the one
	// SSH connection (default 5, as restic's sftp.connections).
	Connections int
	// KeepAlive is the interval of keep-alive requests; a connection
	// that answers none for three intervals is closed and dialled again
	// by the next operation (default 15s).
	KeepAlive time.Duration
	// DialTimeout bounds connecting, the SSH handshake and the login
	// (default 20s).
	DialTimeout time.Duration

	// Home is the home folder used for ~ in file names and for ~/.ssh;
	// AgentSocket is SSH_AUTH_SOCK. ApplyEnv fills both.
	Home        string
	AgentSocket string
}

// Defaults.
const (
	DefaultConnections = 5
	DefaultKeepAlive   = 15 * time.Second
	DefaultDialTimeout = 20 * time.Second
)

// ParseConfig parses the part of an SFTP location after "sftp:", in the
// forms restic accepts:
//
//	[USER@]HOST:/ABSOLUTE/DIR
//	[USER@]HOST:RELATIVE/DIR        (relative to the login's start folder)
//	//[USER@]HOST[:PORT]//ABSOLUTE/DIR   (from "sftp://…")
//	//[USER@]HOST[:PORT]/RELATIVE/DIR
//
// In the first two forms there is no port (it comes from ~/.ssh/config or
// is 22); an IPv6 address goes in brackets ("[::1]:/dir"). The folder is
// cleaned as a slash path. Unlike restic, an empty folder is an error
// rather than the start folder itself (write "." for that), and a password
// in the URL is refused: SSH passwords are not accepted anywhere.
func ParseConfig(loc string) (Config, error) {
	var cfg Config
	if strings.HasPrefix(loc, "//") {
		u, err := url.Parse("sftp:" + loc)
		if err != nil {
			// url's errors quote the whole input; say what is wrong only.
			return cfg, errors.New("sftp: invalid URL in location")
		}
		if u.User != nil {
			if _, hasPassword := u.User.Password(); hasPassword {
				return cfg, errors.New("sftp: a password in the location is not supported; use a key (see -o sftp.identity) or the SSH agent")
			}
			cfg.User = u.User.Username()
		}
		cfg.Host, cfg.Port = u.Hostname(), u.Port()
		if u.Port() == "" && strings.HasSuffix(u.Host, ":") {
			return cfg, fmt.Errorf("sftp: location %q has an empty port", "sftp:"+loc)
		}
		if u.Path == "" || u.Path == "/" {
			return cfg, fmt.Errorf("sftp: location %q names no folder (want sftp://user@host[:port]//absolute/dir or …/relative/dir)", "sftp:"+loc)
		}
		// The first slash separates host and path, as in restic: "//abs"
		// is absolute, "/rel" relative.
		cfg.Path = u.Path[1:]
	} else {
		hostPart, dir, err := splitHostPath(loc)
		if err != nil {
			return cfg, err
		}
		if at := strings.LastIndex(hostPart, "@"); at >= 0 {
			cfg.User, hostPart = hostPart[:at], hostPart[at+1:]
		}
		if strings.HasPrefix(hostPart, "[") && strings.HasSuffix(hostPart, "]") {
			hostPart = hostPart[1 : len(hostPart)-1]
		}
		cfg.Host = hostPart
		cfg.Path = dir
	}
	if cfg.Host == "" {
		return cfg, fmt.Errorf("sftp: location %q has no host", "sftp:"+loc)
	}
	if cfg.Port != "" {
		if n, err := strconv.Atoi(cfg.Port); err != nil || n < 1 || n > 65535 {
			return cfg, fmt.Errorf("sftp: location %q: port %q is not a number from 1 to 65535", "sftp:"+loc, cfg.Port)
		}
	}
	if cfg.Path == "" {
		return cfg, fmt.Errorf("sftp: location %q names no folder (want sftp:user@host:/absolute/dir, or :relative/dir, or :. for the start folder)", "sftp:"+loc)
	}
	cfg.Path = path.Clean(cfg.Path)
	if strings.HasPrefix(cfg.Path, "~") {
		// The SFTP protocol has no ~; servers would make a folder named "~".
		return cfg, fmt.Errorf("sftp: location %q: the folder starts with ~, which SFTP servers do not expand; write it relative (it starts in the login's home on most servers) or absolute", "sftp:"+loc)
	}
	cfg.Connections = DefaultConnections
	cfg.KeepAlive = DefaultKeepAlive
	cfg.DialTimeout = DefaultDialTimeout
	return cfg, nil
}

// splitHostPath splits "user@host:dir" at the first colon, as restic
// does (a user name holds no colon), except that a bracketed IPv6 address
// may hold colons of its own.
func splitHostPath(loc string) (host, dir string, err error) {
	open, colon := strings.Index(loc, "["), strings.Index(loc, ":")
	if open >= 0 && (colon < 0 || open < colon) {
		end := strings.Index(loc[open:], "]")
		if end < 0 {
			return "", "", fmt.Errorf("sftp: location %q: unclosed [ in the host", "sftp:"+loc)
		}
		end += open
		if end+1 >= len(loc) || loc[end+1] != ':' {
			return "", "", fmt.Errorf("sftp: location %q: want a ':' and the folder after the host", "sftp:"+loc)
		}
		return loc[:end+1], loc[end+2:], nil
	}
	h, d, ok := strings.Cut(loc, ":")
	if !ok {
		return "", "", fmt.Errorf("sftp: location %q: want user@host:/dir (no ':' after the host)", "sftp:"+loc)
	}
	return h, d, nil
}

// Location returns the location in a form ParseConfig accepts again:
// "sftp:USER@HOST:DIR", or the URL form when a port is set.
func (c Config) Location() string {
	user := ""
	if c.User != "" {
		user = c.User + "@"
	}
	if c.Port != "" {
		return "sftp://" + user + net.JoinHostPort(c.Host, c.Port) + "/" + c.Path
	}
	host := c.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "sftp:" + user + host + ":" + c.Path
}

// ApplyEnv takes the home folder and the agent's socket from the
// environment: HOME and SSH_AUTH_SOCK. Fields already set are kept.
func (c *Config) ApplyEnv(getenv func(string) string) {
	if c.Home == "" {
		c.Home = getenv("HOME")
	}
	if c.AgentSocket == "" {
		c.AgentSocket = getenv("SSH_AUTH_SOCK")
	}
}

// ApplyOption applies one "-o key=value" option: sftp.identity=FILE and
// sftp.known-hosts=FILE (both repeatable), sftp.connections=N. restic's
// sftp.command and sftp.args are refused with the reason: this backend
// speaks SSH itself and runs no ssh program.
func (c *Config) ApplyOption(key, value string) error {
	switch key {
	case "sftp.identity":
		if value == "" {
			return fmt.Errorf("option %s: empty file name", key)
		}
		c.Identities = append(c.Identities, value)
	case "sftp.known-hosts":
		if value == "" {
			return fmt.Errorf("option %s: empty file name", key)
		}
		c.KnownHosts = append(c.KnownHosts, value)
	case "sftp.connections":
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 {
			return fmt.Errorf("option %s=%q: want a positive number", key, value)
		}
		c.Connections = n
	case "sftp.command", "sftp.args":
		return fmt.Errorf("option %s is restic's way to run an ssh program; scalr-backup speaks SSH itself: use -o sftp.identity=FILE, -o sftp.known-hosts=FILE or ~/.ssh/config's Host, HostName, Port, User and IdentityFile", key)
	default:
		return fmt.Errorf("unknown option %q (supported: sftp.identity, sftp.known-hosts, sftp.connections)", key)
	}
	return nil
}

// expandHome replaces a leading "~/" (or a lone "~") by home.
func expandHome(p, home string) string {
	switch {
	case p == "~":
		return home
	case strings.HasPrefix(p, "~/"):
		return path.Join(home, p[2:])
	}
	return p
}
