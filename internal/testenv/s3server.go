package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// VersityGWVersion is the versitygw release scripts/install-versitygw.sh
// builds into ToolPath("versitygw", VersityGWVersion).
const VersityGWVersion = "1.8.0"

// S3Region is the region the test server signs with (versitygw's default).
const S3Region = "us-east-1"

// S3Server is a versitygw S3 gateway over a temporary folder, listening on
// 127.0.0.1, private to one test.
type S3Server struct {
	// Endpoint is host:port.
	Endpoint string
	// KeyID and Secret are the root credentials, random per server.
	KeyID  string
	Secret string
	// AdminEndpoint is the admin API's host:port, set when the server was
	// started with S3Options.IAM.
	AdminEndpoint string

	bin  string
	opts S3Options
}

// S3Options configure StartS3With.
type S3Options struct {
	// DataDir is the folder holding the buckets ("" for a fresh temporary
	// folder); tests point it at a small tmpfs to fill the disk.
	DataDir string
	// IAM runs versitygw's internal IAM service and admin API, so that
	// AddUser can make accounts other than root.
	IAM bool
	// Versioning starts versitygw with --versioning-dir (a fresh
	// temporary folder), which bucket versioning and Object Lock need: a
	// bucket made with Object Lock then keeps object versions, refuses to
	// delete a locked version and answers a plain DELETE with a delete
	// marker.
	Versioning bool
}

// URL is the repository location of bucket on this server:
// "s3:http://127.0.0.1:PORT/bucket".
func (s *S3Server) URL(bucket string) string {
	return "s3:http://" + s.Endpoint + "/" + bucket
}

// Env is the environment a child process (the restic CLI) needs to reach
// the server: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION.
func (s *S3Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.KeyID,
		"AWS_SECRET_ACCESS_KEY=" + s.Secret,
		"AWS_DEFAULT_REGION=" + S3Region,
	}
}

// Getenv looks up Env's variables, for code that takes a getenv function.
func (s *S3Server) Getenv(name string) string {
	for _, kv := range s.Env() {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v
		}
	}
	return ""
}

// StartS3 starts versitygw (built by scripts/install-versitygw.sh) with a
// posix backend in a fresh temporary folder, on a free port of 127.0.0.1,
// with random root credentials passed through its environment (never
// argv). It returns once the server answers HTTP, and stops it when the
// test ends. Without the binary the test is skipped, or fails under
// SCALR_BACKUP_REQUIRE_INTEGRATION=1.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	return StartS3With(t, S3Options{})
}

// StartS3With is StartS3 with options.
func StartS3With(t testing.TB, opts S3Options) *S3Server {
	t.Helper()
	bin := ToolPath("versitygw", VersityGWVersion)
	if _, err := os.Stat(bin); err != nil {
		Missing(t, "versitygw %s not found at %s: run scripts/install-versitygw.sh", VersityGWVersion, bin)
	}
	srv := &S3Server{KeyID: "vgw" + randomHexString(t, 10), Secret: randomHexString(t, 20), bin: bin, opts: opts}

	// The free port is found by binding and closing; another process may
	// grab it before versitygw does, so try a few times.
	var lastErr error
	for try := 0; try < 3; try++ {
		port, err := freeLocalPort()
		if err != nil {
			t.Fatalf("versitygw: %v", err)
		}
		endpoint := net.JoinHostPort("127.0.0.1", port)
		if lastErr = srv.start(t, bin, endpoint); lastErr == nil {
			srv.Endpoint = endpoint
			return srv
		}
	}
	t.Fatalf("versitygw did not start: %v", lastErr)
	return nil
}

func (s *S3Server) start(t testing.TB, bin, endpoint string) error {
	dir := s.opts.DataDir
	if dir == "" {
		dir = t.TempDir()
	}
	args := []string{"posix"}
	if s.opts.Versioning {
		args = append(args, "--versioning-dir", t.TempDir())
	}
	cmd := exec.Command(bin, append(args, dir)...)
	cmd.Env = append(versityEnv(),
		"VGW_PORT="+endpoint,
		"VGW_REGION="+S3Region,
		"ROOT_ACCESS_KEY_ID="+s.KeyID,
		"ROOT_SECRET_ACCESS_KEY="+s.Secret,
	)
	if s.opts.IAM {
		port, err := freeLocalPort()
		if err != nil {
			return err
		}
		s.AdminEndpoint = net.JoinHostPort("127.0.0.1", port)
		cmd.Env = append(cmd.Env, "VGW_IAM_DIR="+t.TempDir(), "VGW_ADMIN_PORT="+s.AdminEndpoint)
	}
	logPath := filepath.Join(t.TempDir(), "versitygw.log")
	out, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitHTTP(ctx, "http://"+endpoint+"/", exited); err != nil {
		stop()
		return fmt.Errorf("%w; output:\n%s", err, logTail(logPath))
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("versitygw on %s, end of its output:\n%s", endpoint, logTail(logPath))
		}
	})
	return nil
}

// waitHTTP polls url until any HTTP answer arrives (an anonymous request
// is denied, which proves the server is up), the process exits or ctx ends.
func waitHTTP(ctx context.Context, url string, exited <-chan error) error {
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("versitygw exited early: %v", err)
		case <-ctx.Done():
			return errors.New("versitygw did not answer within 30s")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// versityEnv is the test process's environment without variables that
// would configure versitygw or credentials behind the test's back.
func versityEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VGW_") || strings.HasPrefix(k, "ROOT_") || strings.HasPrefix(k, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freeLocalPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

func randomHexString(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}

// logTail returns the last 8 KiB of a log file.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b[max(0, len(b)-8<<10):])
}

// AddUser makes an account with role "user" (it owns no bucket and may use
// only what a bucket policy grants it) through the admin API of a server
// started with S3Options.IAM. Credentials go through the environment.
func (s *S3Server) AddUser(t testing.TB, keyID, secret string) {
	t.Helper()
	if s.AdminEndpoint == "" {
		t.Fatal("testenv: AddUser needs a server started with S3Options{IAM: true}")
	}
	cmd := exec.Command(s.bin, "admin", "create-user", "--role", "user", "--access", keyID, "--secret", secret)
	cmd.Env = append(versityEnv(),
		"ADMIN_ACCESS_KEY_ID="+s.KeyID,
		"ADMIN_SECRET_ACCESS_KEY="+s.Secret,
		"ADMIN_ENDPOINT_URL=http://"+s.AdminEndpoint,
		"ADMIN_REGION="+S3Region,
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("versitygw admin create-user: %v\n%s", err, out)
	}
}
