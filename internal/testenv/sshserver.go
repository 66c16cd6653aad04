//go:build linux

package testenv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshdPath is where Debian's openssh-server puts the daemon
// (scripts/test-setup.sh installs it). It must be run by absolute path.
const sshdPath = "/usr/sbin/sshd"

// SSHServer is an OpenSSH sshd of its own on 127.0.0.1, private to one
// test: its own config, host key and authorised client key, run in the
// foreground (sshd -D -e) and stopped by PID. No system service is
// touched. It logs in the user running the test (root in CI) with the
// client key only.
type SSHServer struct {
	// Port is the port on 127.0.0.1.
	Port string
	// User is the login name (the user running the test).
	User string
	// KeyFile is the authorised client key (ed25519, OpenSSH format,
	// mode 0600, no passphrase).
	KeyFile string
	// KnownHosts is a known_hosts file with the server's host key for
	// [127.0.0.1]:Port.
	KnownHosts string
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey
	// StartDir is the folder SFTP sessions start in: relative repository
	// paths are under it.
	StartDir string

	dir     string
	config  string
	logPath string
	proc    *sshdProc
}

// SSHOptions configure StartSSHWith.
type SSHOptions struct {
	// ReadOnly serves SFTP read-only (sftp-server -R): every write is
	// refused with "permission denied", as on a read-only share, also for
	// root.
	ReadOnly bool
}

type sshdProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartSSH starts sshd with SFTP on a free port of 127.0.0.1 and returns
// once it accepts connections; it is stopped when the test ends. Without
// /usr/sbin/sshd the test is skipped, or fails under
// SCALR_BACKUP_REQUIRE_INTEGRATION=1.
func StartSSH(t testing.TB) *SSHServer {
	t.Helper()
	return StartSSHWith(t, SSHOptions{})
}

// StartSSHWith is StartSSH with options.
func StartSSHWith(t testing.TB, opts SSHOptions) *SSHServer {
	t.Helper()
	Integration(t)
	if _, err := os.Stat(sshdPath); err != nil {
		Missing(t, "sshd not found at %s (%v): run scripts/test-setup.sh (Debian's openssh-server)", sshdPath, err)
		return nil
	}
	if os.Geteuid() == 0 {
		// As root, sshd wants its privilege-separation folder (the
		// package's service would make it at boot).
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshd: %v", err)
		}
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("sshd: current user: %v", err)
	}
	dir := t.TempDir()
	s := &SSHServer{User: u.Username, dir: dir, StartDir: filepath.Join(dir, "start"), logPath: filepath.Join(dir, "sshd.log")}
	if err := os.Mkdir(s.StartDir, 0o700); err != nil {
		t.Fatal(err)
	}

	hostPub := writeKey(t, filepath.Join(dir, "host_ed25519"))
	s.HostKey = hostPub
	s.KeyFile = filepath.Join(dir, "client_ed25519")
	clientPub := writeKey(t, s.KeyFile)
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}

	var lastErr error
	for try := 0; try < 3; try++ {
		port, err := freeLocalPort()
		if err != nil {
			t.Fatalf("sshd: %v", err)
		}
		s.Port = port
		s.writeConfig(t, opts)
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("sshd did not start: %v", lastErr)
	}
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, hostPub) + "\n"
	if err := os.WriteFile(s.KnownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sshd on %s, end of its log:\n%s", s.Addr(), logTail(s.logPath))
		}
	})
	return s
}

// writeKey writes a fresh ed25519 private key to file (mode 0600) and
// returns its public key.
func writeKey(t testing.TB, file string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// NewKey writes a fresh ed25519 key the server does not authorise to a
// file in a temporary folder and returns its path.
func (s *SSHServer) NewKey(t testing.TB) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "other_ed25519")
	writeKey(t, file)
	return file
}

func (s *SSHServer) writeConfig(t testing.TB, opts SSHOptions) {
	t.Helper()
	sftp := "internal-sftp -d " + s.StartDir
	if opts.ReadOnly {
		sftp += " -R"
	}
	lines := []string{
		"Port " + s.Port,
		"ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(s.dir, "host_ed25519"),
		"PidFile none",
		"AuthorizedKeysFile " + filepath.Join(s.dir, "authorized_keys"),
		"AuthenticationMethods publickey",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"AllowUsers " + s.User,
		// The test's folders are under the system's temporary folder,
		// which StrictModes would reject.
		"StrictModes no",
		"UsePAM no",
		"MaxStartups 64",
		"MaxSessions 64",
		"Subsystem sftp " + sftp,
		"LogLevel VERBOSE",
	}
	s.config = filepath.Join(s.dir, "sshd_config")
	if err := os.WriteFile(s.config, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Addr is 127.0.0.1:Port.
func (s *SSHServer) Addr() string { return net.JoinHostPort("127.0.0.1", s.Port) }

// Location is the repository location of dir in the URL form with the
// port: "sftp://USER@127.0.0.1:PORT//ABS" for an absolute dir,
// ".../REL" for one relative to StartDir.
func (s *SSHServer) Location(dir string) string {
	return "sftp://" + s.User + "@" + s.Addr() + "/" + dir
}

// ResticLocation is the location restic takes with ResticOptions: its
// sftp.command names the port, so the host part is only a label.
func (s *SSHServer) ResticLocation(dir string) string {
	return "sftp:" + s.User + "@127.0.0.1:" + dir
}

// Options are scalr-backup's -o values (without the "-o") that reach the
// server: the client key and the known_hosts file.
func (s *SSHServer) Options() []string {
	return []string{"sftp.identity=" + s.KeyFile, "sftp.known-hosts=" + s.KnownHosts}
}

// ResticOptions are the arguments that make restic's ssh program reach
// the server with the client key and the known_hosts file (and nothing of
// the user's own ssh configuration): "-o", "sftp.command=ssh …".
func (s *SSHServer) ResticOptions() []string {
	return []string{"-o", "sftp.command=" + s.SSHCommand()}
}

// SSHCommand is the ssh command line restic runs for SFTP.
func (s *SSHServer) SSHCommand() string {
	return strings.Join([]string{
		"ssh", "-F", "/dev/null", "-p", s.Port, "-i", s.KeyFile,
		"-o", "UserKnownHostsFile=" + s.KnownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		s.User + "@127.0.0.1", "-s", "sftp",
	}, " ")
}

// start runs sshd and waits until it accepts connections on Port.
func (s *SSHServer) start() error {
	out, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", s.config)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", sshdPath, err)
	}
	p := &sshdProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err == nil {
			// Read the banner: a port another process holds would not
			// send sshd's.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 8)
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "SSH-") {
				s.proc = p
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("sshd exited early; log:\n%s", logTail(s.logPath))
		case <-ctx.Done():
			killTree(cmd.Process.Pid)
			<-p.exited
			return fmt.Errorf("sshd did not accept connections on %s within 20s; log:\n%s", s.Addr(), logTail(s.logPath))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill stops sshd and every process it started for a connection (each
// runs in a session of its own, so a process group would miss them), by
// PID with SIGKILL: open connections drop at once, as when a server
// crashes.
func (s *SSHServer) Kill(t testing.TB) {
	t.Helper()
	s.stop()
}

// Restart starts sshd again, with the same port, config and keys, after
// Kill.
func (s *SSHServer) Restart(t testing.TB) {
	t.Helper()
	var err error
	for try := 0; try < 20; try++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger a moment
	}
	t.Fatalf("restart sshd: %v", err)
}

func (s *SSHServer) stop() {
	if s.proc == nil {
		return
	}
	killTree(s.proc.cmd.Process.Pid)
	<-s.proc.exited
	s.proc = nil
}

// killTree stops pid from forking (SIGSTOP), then kills it and all its
// descendants by PID. Descendants are found through /proc's parent links
// before anything dies, since orphans are re-parented.
func killTree(pid int) {
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	pids := append(descendants(pid), pid)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// descendants lists the PIDs below pid, from /proc/PID/stat's parent field.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name is in parentheses and may hold spaces; the
		// parent PID is the second field after it.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// Log returns the end of sshd's log.
func (s *SSHServer) Log() string { return logTail(s.logPath) }
