// Package pgstream backs up and restores the Postgres databases of Docker
// containers through the Docker API alone: it finds the containers
// (Discover), runs pg_dump, pg_dumpall, psql and pg_restore inside them by
// exec with their standard streams carried over the hijacked exec
// connection, and streams dumps straight into a restic-format repository
// (BackupContainer) and back (Restore). Drill proves a snapshot restores,
// in a throwaway container.
//
// Nothing is staged on local disk: a dump goes from the exec connection
// through the repository's chunker, compression and encryption to the
// backend, and a restore goes from the repository's verifying reader into
// pg_restore's standard input. No password is ever put in a command line,
// a log line or an error message: the tools connect over the container's
// local socket as the container's POSTGRES_USER, with the password the
// container's environment gives (POSTGRES_PASSWORD or the file
// POSTGRES_PASSWORD_FILE names) in their environment, on the port and socket
// the server uses (see Conn).
package pgstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker is the part of the Docker Engine API pgstream uses. The real
// client (*client.Client, from Connect or client.NewClientWithOpts)
// implements it; tests implement it with fakes.
type Docker interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerExecCreate(ctx context.Context, containerID string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, config container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	// For the restore drill's throwaway containers.
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	// The end of a drill container's log, for its errors.
	ContainerLogs(ctx context.Context, containerID string, options container.LogsOptions) (io.ReadCloser, error)
}

var _ Docker = (*client.Client)(nil)

// DefaultDockerHost is where the engine listens when DOCKER_HOST is unset.
const DefaultDockerHost = "unix:///var/run/docker.sock"

// Connect returns a client for the engine named by DOCKER_HOST (looked up
// with getenv; nil means os.Getenv), else the default socket, with API
// version negotiation on (the engine may be older than the client), and
// checks that the engine answers. When it does not, the error says what an
// operator can do about it: the socket is missing, or its permissions
// keep this process out, or nothing listens on it.
func Connect(ctx context.Context, getenv func(string) string) (*client.Client, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host := getenv("DOCKER_HOST"); host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cli.Ping(pctx); err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, explainDockerError(cli.DaemonHost(), err)
	}
	// Negotiate now, so that a version problem shows here and not in the
	// middle of a backup.
	cli.NegotiateAPIVersion(pctx)
	return cli, nil
}

// ErrDockerUnavailable is wrapped by the errors of Connect.
var ErrDockerUnavailable = errors.New("the Docker engine is not reachable")

// explainDockerError turns a failed ping into an error an operator can act
// on, looking at the socket itself for unix:// hosts.
func explainDockerError(host string, pingErr error) error {
	u, perr := url.Parse(host)
	if perr != nil || u.Scheme != "unix" {
		return fmt.Errorf("%w at %s: %v", ErrDockerUnavailable, host, pingErr)
	}
	sock := u.Path
	if sock == "" {
		sock = u.Opaque
	}
	fi, err := os.Stat(sock)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: the Docker socket %s does not exist (is dockerd running? in a container, bind-mount it with -v /var/run/docker.sock:/var/run/docker.sock; DOCKER_HOST names another engine)", ErrDockerUnavailable, sock)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: permission denied looking up the Docker socket %s (check the folder's permissions)", ErrDockerUnavailable, sock)
	case err != nil:
		return fmt.Errorf("%w: the Docker socket %s: %v", ErrDockerUnavailable, sock, err)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%w: %s is not a socket (DOCKER_HOST must name the Docker socket)", ErrDockerUnavailable, sock)
	}
	conn, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%w: the Docker socket %s accepts connections but the engine did not answer: %v", ErrDockerUnavailable, sock, pingErr)
	}
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		gid := ""
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			gid = fmt.Sprintf(" (group id %d)", st.Gid)
		}
		return fmt.Errorf("%w: permission denied on the Docker socket %s: run as root or in the socket's group%s (uid %d now)", ErrDockerUnavailable, sock, gid, os.Getuid())
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: nothing listens on the Docker socket %s (is dockerd running?)", ErrDockerUnavailable, sock)
	}
	return fmt.Errorf("%w: the Docker socket %s: %v", ErrDockerUnavailable, sock, err)
}

// containerName is a container's name without the API's leading slash.
func containerName(names []string, id string) string {
	for _, n := range names {
		n = strings.TrimPrefix(n, "/")
		if n != "" && !strings.Contains(n, "/") { // skip legacy link aliases "/a/b"
			return n
		}
	}
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
