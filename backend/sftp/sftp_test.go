//go:build linux

package sftp

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// testConfig is the configuration of location on srv with the server's
// key and known_hosts, and an empty HOME (no ~/.ssh of the machine's).
func testConfig(t testing.TB, srv *testenv.SSHServer, location string) Config {
	t.Helper()
	loc, err := backend.ParseLocation(location)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(loc.Path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ApplyEnv(func(string) string { return "" })
	cfg.Home = t.TempDir()
	for _, o := range srv.Options() {
		k, v, _ := strings.Cut(o, "=")
		if err := cfg.ApplyOption(k, v); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

func newTestBackend(t testing.TB, cfg Config) *Backend {
	t.Helper()
	be, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

func createRepo(t testing.TB, srv *testenv.SSHServer, dir string) *Backend {
	t.Helper()
	be := newTestBackend(t, testConfig(t, srv, srv.Location(dir)))
	if err := be.Create(context.Background()); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return be
}

// TestContract runs the backend contract against a real sshd with one
// connection slot: List must not hold it while fn runs (Remove while
// listing). The retry and counting decorators that open stacks on top
// run in every command test over SFTP (sftp_*_test.go in
// cmd/scalr-backup); here they would only multiply the failing cases'
// round trips by the attempts.
func TestContract(t *testing.T) {
	srv := testenv.StartSSH(t)
	n := 0
	backendtest.RunContract(t, func(t *testing.T) backend.Backend {
		n++
		cfg := testConfig(t, srv, srv.Location(filepath.Join(t.TempDir(), fmt.Sprintf("repo%d", n))))
		cfg.Connections = 1
		be := newTestBackend(t, cfg)
		if err := be.Create(context.Background()); err != nil {
			t.Fatal(err)
		}
		return be
	})
}

// TestLayout: the folders Create makes, where files land, that they are
// read-only and that a relative location is under the session's start
// folder.
func TestLayout(t *testing.T) {
	srv := testenv.StartSSH(t)
	ctx := context.Background()
	be := createRepo(t, srv, "rel/repo")
	root := filepath.Join(srv.StartDir, "rel", "repo")
	for _, d := range []string{"keys", "snapshots", "index", "locks", "data", "data/00", "data/ff"} {
		fi, err := os.Stat(filepath.Join(root, d))
		if err != nil || !fi.IsDir() {
			t.Fatalf("folder %s after Create: %v", d, err)
		}
	}
	id := strings.Repeat("ab", 32)
	if err := be.Save(ctx, backend.Handle{Type: backend.PackFile, Name: id}, backend.BytesSource([]byte("pack"))); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, backend.BytesSource([]byte("cfg"))); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "data", "ab", id))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o400 {
		t.Errorf("saved pack has mode %o, want 0400", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(root, "config")); err != nil {
		t.Fatal(err)
	}
	// Nothing else: no temporary file left.
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), backend.TempPrefix) {
			t.Errorf("temporary file left: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// A temporary file an interrupted save left is a leftover; only such
	// files may be removed through RemoveLeftover.
	if err := os.WriteFile(filepath.Join(root, "data", "ab", backend.TempPrefix+"cut"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	var left []string
	if err := be.ListLeftovers(ctx, func(lo backend.Leftover) error { left = append(left, lo.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != "data/ab/"+backend.TempPrefix+"cut" {
		t.Fatalf("leftovers %q", left)
	}
	if err := be.RemoveLeftover(ctx, "data/ab/"+id); err == nil || !backend.IsPermanent(err) {
		t.Errorf("RemoveLeftover of a pack: %v, want a permanent refusal", err)
	}
	if err := be.RemoveLeftover(ctx, left[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, left[0])); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("leftover still there: %v", err)
	}
	if err := be.Create(ctx); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over a repository: %v, want fs.ErrExist", err)
	}
	if got := be.Location(); got != srv.Location("rel/repo") {
		t.Errorf("Location() = %q, want %q", got, srv.Location("rel/repo"))
	}
}

// freezeProxy forwards TCP connections to a target until Freeze: from then
// on the connections open at that moment carry nothing more, in either
// direction, but stay open (a link that died without a reset: a NAT
// timeout, a pulled cable). Connections made later work.
type freezeProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	live   []*atomic.Bool
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			frozen := &atomic.Bool{}
			p.mu.Lock()
			p.live = append(p.live, frozen)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					for frozen.Load() {
						time.Sleep(10 * time.Millisecond) // hold the bytes: the link is dead
						if _, e := dst.Write(nil); e != nil {
							return
						}
					}
					if n > 0 {
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}
			go pipe(s, c)
			go pipe(c, s)
		}
	}()
	return p
}

// Freeze stops every connection open now.
func (p *freezeProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.live {
		f.Store(true)
	}
	p.live = nil
}

// TestKeepAlive: when the link dies silently, keep-alives close the
// connection (an operation waiting on it fails instead of hanging), and
// the next attempt dials a new one.
func TestKeepAlive(t *testing.T) {
	srv := testenv.StartSSH(t)
	proxy := newFreezeProxy(t, srv.Addr())
	ctx := context.Background()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(proxy.ln.Addr().String())}, srv.HostKey)
	if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, srv, "sftp://"+srv.User+"@"+proxy.ln.Addr().String()+"/"+filepath.Join(t.TempDir(), "repo"))
	cfg.KnownHosts = []string{kh}
	cfg.KeepAlive = 200 * time.Millisecond
	be := newTestBackend(t, cfg)
	if err := be.Create(ctx); err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.SnapshotFile, Name: strings.Repeat("5", 64)}
	if err := be.Save(ctx, h, backend.BytesSource([]byte("snapshot"))); err != nil {
		t.Fatal(err)
	}
	proxy.Freeze()
	start := time.Now()
	_, err := be.Stat(ctx, h)
	took := time.Since(start)
	t.Logf("Stat on a dead link: %v after %s", err, took.Round(time.Millisecond))
	if err == nil || backend.IsPermanent(err) {
		t.Errorf("Stat on a dead link: %v, want a transient error", err)
	}
	if took > 5*time.Second {
		t.Errorf("the dead link was noticed after %s, want about 3 keep-alive intervals", took)
	}
	if fi, err := be.Stat(ctx, h); err != nil || fi.Size != 8 {
		t.Errorf("Stat after the link died (a new connection): %+v, %v", fi, err)
	}
}

// TestKeySources: the SSH agent's keys log in with no key file at all;
// ecdsa and rsa key files are read; a key file with a passphrase is not
// offered and the error says to use the agent; an explicit identity that
// does not exist is an error naming it.
func TestKeySources(t *testing.T) {
	srv := testenv.StartSSH(t)
	ctx := context.Background()

	t.Run("agent", func(t *testing.T) {
		pem, err := os.ReadFile(srv.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := ssh.ParseRawPrivateKey(pem)
		if err != nil {
			t.Fatal(err)
		}
		keyring := agent.NewKeyring()
		if err := keyring.Add(agent.AddedKey{PrivateKey: raw}); err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(t.TempDir(), "agent.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _ = agent.ServeAgent(keyring, c) }()
			}
		}()
		cfg := testConfig(t, srv, srv.Location(filepath.Join(t.TempDir(), "repo")))
		cfg.Identities = nil // HOME is empty: the agent is the only source
		cfg.AgentSocket = sock
		be := newTestBackend(t, cfg)
		if err := be.Create(ctx); err != nil {
			t.Fatalf("Create with the agent's key: %v", err)
		}
	})

	t.Run("key-files", func(t *testing.T) {
		dir := t.TempDir()
		ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		write := func(name string, key any, passphrase string) string {
			var block *pem.Block
			var err error
			if passphrase == "" {
				block, err = ssh.MarshalPrivateKey(key, "")
			} else {
				block, err = ssh.MarshalPrivateKeyWithPassphrase(key, "", []byte(passphrase))
			}
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}
		cfg := Config{Home: t.TempDir(), Identities: []string{write("id_ecdsa", ec, ""), write("id_rsa", rs, "")}}
		ks, err := cfg.loadKeys(ctx)
		if err != nil || len(ks.signers) != 2 {
			t.Fatalf("ecdsa and rsa files: %v", err)
		}
		ks.close()

		locked := write("id_locked", ec, "a passphrase")
		cfg = Config{Home: t.TempDir(), Identities: []string{locked}}
		_, err = cfg.loadKeys(ctx)
		if err == nil || !strings.Contains(err.Error(), locked+" is protected by a passphrase") || !strings.Contains(err.Error(), "ssh-agent") {
			t.Errorf("a key with a passphrase: %v", err)
		}
		if err != nil && strings.Contains(err.Error(), "a passphrase\"") {
			t.Errorf("the error repeats the passphrase: %v", err)
		}

		cfg = Config{Home: t.TempDir(), Identities: []string{filepath.Join(dir, "missing")}}
		if _, err := cfg.loadKeys(ctx); err == nil || !strings.Contains(err.Error(), "missing") {
			t.Errorf("a missing identity file: %v", err)
		}
	})
}

// TestDialTimeout: a server that accepts the connection and says nothing
// fails the operation after DialTimeout, as a transient error (the retries
// may find it back), instead of hanging.
func TestDialTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent until the test ends
		}
	}()
	cfg, err := ParseConfig("//someone@" + ln.Addr().String() + "//srv/repo")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Home, cfg.DialTimeout = t.TempDir(), 300*time.Millisecond
	key := filepath.Join(t.TempDir(), "id_ed25519")
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Identities = []string{key}
	be := newTestBackend(t, cfg)
	start := time.Now()
	_, err = be.Stat(context.Background(), backend.Handle{Type: backend.ConfigFile})
	took := time.Since(start)
	t.Logf("Stat against a silent server: %v after %s", err, took.Round(time.Millisecond))
	// The connection's deadline or the context's timer ends it, whichever
	// fires first: either way a transient error.
	var perm *backend.PermanentError
	if err == nil || errors.As(err, &perm) || took > 3*time.Second {
		t.Errorf("want a timeout after about 300ms: %v after %s", err, took)
	}
}
