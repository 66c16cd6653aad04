package sftp

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// defaultIdentities are the key files tried, in OpenSSH's order, when
// neither -o sftp.identity nor ~/.ssh/config's IdentityFile names one.
var defaultIdentities = []string{"id_ed25519", "id_ecdsa", "id_rsa"}

// keySet is what the login offers: the agent's keys first, then the key
// files', as OpenSSH does. tried lists the sources for error messages
// (file names, "agent: N keys"), never key material.
type keySet struct {
	signers []ssh.Signer
	tried   []string
	// skipped says why a file was not offered (protected by a passphrase,
	// which cannot be typed here; unreadable), for the error when the
	// login fails.
	skipped []string
	agent   net.Conn
}

func (k *keySet) close() {
	if k.agent != nil {
		_ = k.agent.Close()
	}
}

// loadKeys gathers the keys to offer. A file named with -o sftp.identity
// or IdentityFile must be usable; of the default files only those that
// exist are read. Having no key at all is an error listing what was
// looked at.
func (c *Config) loadKeys(ctx context.Context) (*keySet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ks := &keySet{}
	seen := map[string]bool{}
	add := func(s ssh.Signer) {
		blob := string(s.PublicKey().Marshal())
		if !seen[blob] {
			seen[blob] = true
			ks.signers = append(ks.signers, s)
		}
	}
	if c.AgentSocket != "" {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", c.AgentSocket)
		if err != nil {
			ks.skipped = append(ks.skipped, fmt.Sprintf("the SSH agent at %s does not answer (%v)", c.AgentSocket, err))
		} else {
			ks.agent = conn
			signers, err := agent.NewClient(conn).Signers()
			if err != nil {
				ks.skipped = append(ks.skipped, fmt.Sprintf("the SSH agent at %s: %v", c.AgentSocket, err))
			}
			for _, s := range signers {
				add(s)
			}
			ks.tried = append(ks.tried, fmt.Sprintf("agent (%d keys)", len(signers)))
		}
	}
	explicit := len(c.Identities) > 0
	files := c.Identities
	if !explicit {
		for _, n := range defaultIdentities {
			files = append(files, path.Join(c.Home, ".ssh", n))
		}
	}
	for _, f := range files {
		f = expandHome(f, c.Home)
		s, err := readKey(f)
		switch {
		case err == nil:
			add(s)
			ks.tried = append(ks.tried, f)
		case !explicit && errors.Is(err, fs.ErrNotExist):
			// Not every default key type exists; OpenSSH tries those that do.
		case explicit && errors.Is(err, fs.ErrNotExist):
			ks.close()
			return nil, fmt.Errorf("sftp: identity file %s: %w", f, err)
		default:
			ks.skipped = append(ks.skipped, err.Error())
		}
	}
	if len(ks.signers) == 0 {
		ks.close()
		where := "no SSH agent (SSH_AUTH_SOCK is not set)"
		if c.AgentSocket != "" {
			where = "no key in the SSH agent"
		}
		msg := fmt.Sprintf("sftp: no SSH key to log in with: %s, and no usable key file (looked at %s); name one with -o sftp.identity=FILE", where, strings.Join(files, ", "))
		if len(ks.skipped) > 0 {
			msg += " (" + strings.Join(ks.skipped, "; ") + ")"
		}
		return nil, errors.New(msg)
	}
	return ks, nil
}

// readKey parses one private key file. A key protected by a passphrase
// is not offered: nothing here can ask for it (load it into ssh-agent).
func readKey(file string) (ssh.Signer, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	// Key files are small; a large file is not a key (and is not read
	// whole into memory).
	if fi.Size() > 64<<10 {
		return nil, fmt.Errorf("%s is %d bytes, too large for a private key", file, fi.Size())
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(pem)
	clear(pem)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return nil, fmt.Errorf("%s is protected by a passphrase: add it to ssh-agent (SSH_AUTH_SOCK) instead", file)
	case err != nil:
		// The parser's error never holds key material, but keep only its
		// kind to be sure nothing of the file is echoed.
		return nil, fmt.Errorf("%s is not a private key this client reads (OpenSSH, PEM or PKCS#8: ed25519, ecdsa, rsa)", file)
	}
	return s, nil
}

// hostKeys checks server keys against known_hosts files, as OpenSSH's
// StrictHostKeyChecking=yes does: an unknown or changed key is refused,
// never added.
type hostKeys struct {
	files    []string // the files read (existing ones)
	addTo    string   // where the message tells to add a line
	callback ssh.HostKeyCallback
}

// loadHostKeys reads the known_hosts files: -o sftp.known-hosts (each must
// exist), else ~/.ssh/known_hosts (which may not exist yet; then every
// host is unknown).
func (c *Config) loadHostKeys(ctx context.Context) (*hostKeys, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	hk := &hostKeys{}
	files := c.KnownHosts
	explicit := len(files) > 0
	if !explicit {
		files = []string{path.Join(c.Home, ".ssh", "known_hosts")}
	}
	for _, f := range files {
		f = expandHome(f, c.Home)
		if hk.addTo == "" {
			hk.addTo = f
		}
		if _, err := os.Stat(f); err != nil {
			if explicit || !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("sftp: known_hosts file %s: %w", f, err)
			}
			continue
		}
		hk.files = append(hk.files, f)
	}
	if len(hk.files) == 0 {
		hk.callback = func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }
		return hk, nil
	}
	cb, err := knownhosts.New(hk.files...)
	if err != nil {
		return nil, fmt.Errorf("sftp: read known_hosts %s: %w", strings.Join(hk.files, ", "), err)
	}
	hk.callback = cb
	return hk, nil
}

// algorithms returns the host key algorithms to ask the server for: those
// of the keys known for address, so that a server with several host keys
// shows the one known_hosts has (else it may show another type, which
// would look like an unknown key). Nil, for an unknown host, leaves the
// library's defaults.
func (hk *hostKeys) algorithms(address string, remote net.Addr) []string {
	// A key that can match no entry: the error lists the known ones.
	probe, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public())
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(hk.callback(address, remote, probe), &ke) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		var names []string
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			names = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		default:
			names = []string{t}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				algos = append(algos, n)
			}
		}
	}
	return algos
}

// HostKeyError says why a server's key was refused: it is not in
// known_hosts (Known is empty) or differs from the key known_hosts has.
// It is permanent: no retry changes a host key.
type HostKeyError struct {
	Host        string // as known_hosts names it: host, or [host]:port
	Fingerprint string // SHA256:… of the key the server showed
	KeyType     string
	Line        string   // the known_hosts line for the key shown
	Files       []string // the known_hosts files read
	AddTo       string
	Known       []string // FILE:LINE of the entries that did not match
	Revoked     bool
}

func (e *HostKeyError) Error() string {
	files := strings.Join(e.Files, ", ")
	if files == "" {
		files = e.AddTo + " (which does not exist)"
	}
	switch {
	case e.Revoked:
		return fmt.Sprintf("sftp: the host key of %s (%s %s) is marked revoked in %s; refusing to connect", e.Host, e.KeyType, e.Fingerprint, files)
	case len(e.Known) > 0:
		return fmt.Sprintf("sftp: HOST KEY CHANGED for %s: the server shows %s %s, which does not match %s; "+
			"this may be an attack, or the server's key was changed: check the fingerprint with the provider, "+
			"and only then replace that entry with this line:\n%s", e.Host, e.KeyType, e.Fingerprint, strings.Join(e.Known, ", "), e.Line)
	default:
		return fmt.Sprintf("sftp: the host key of %s is not known (read %s): the server shows %s %s; "+
			"check that fingerprint with the provider (or run ssh-keyscan on a trusted network), then add this line to %s:\n%s",
			e.Host, files, e.KeyType, e.Fingerprint, e.AddTo, e.Line)
	}
}

// check is the ssh.HostKeyCallback; it turns knownhosts' errors into a
// HostKeyError.
func (hk *hostKeys) check(address string, remote net.Addr, key ssh.PublicKey) error {
	err := hk.callback(address, remote, key)
	if err == nil {
		return nil
	}
	host := knownhosts.Normalize(address)
	he := &HostKeyError{
		Host:        host,
		Fingerprint: ssh.FingerprintSHA256(key),
		KeyType:     key.Type(),
		Line:        knownhosts.Line([]string{host}, key),
		Files:       hk.files,
		AddTo:       hk.addTo,
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &re):
		he.Revoked = true
	case errors.As(err, &ke):
		for _, k := range ke.Want {
			he.Known = append(he.Known, fmt.Sprintf("%s:%d (%s %s)", k.Filename, k.Line, k.Key.Type(), ssh.FingerprintSHA256(k.Key)))
		}
	default:
		return fmt.Errorf("sftp: check the host key of %s: %w", host, err)
	}
	return he
}
