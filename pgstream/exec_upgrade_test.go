package pgstream

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docker/docker/client"
)

// A proxy that answers an exec's attach with 200 instead of 101 Switching
// Protocols (tecnativa/docker-socket-proxy 0.2.0 on HAProxy 3.0 did): the
// error names the proxy and the API's address, and discovery fails with it
// instead of listing every container as having no Postgres.
func TestExecUpgradeRefusedByProxy(t *testing.T) {
	const name = "scalr-app-db"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if i := strings.Index(p[1:], "/"); strings.HasPrefix(p, "/v1.") && i > 0 {
			p = p[i+1:] // drop the API version
		}
		reply := func(v any) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		}
		switch {
		case p == "/_ping":
			w.Header().Set("Api-Version", "1.41")
			_, _ = w.Write([]byte("OK"))
		case p == "/containers/json":
			reply([]map[string]any{{"Id": "c1", "Names": []string{"/" + name}, "Image": "postgres:15", "State": "running"}})
		case p == "/containers/"+name+"/json" || p == "/containers/c1/json":
			reply(map[string]any{
				"Id": "c1", "Name": "/" + name, "Image": "sha256:1",
				"State":  map[string]any{"Running": true, "Status": "running"},
				"Config": map[string]any{"Image": "postgres:15", "Env": []string{"POSTGRES_PASSWORD=x"}},
			})
		case strings.HasSuffix(p, "/exec") && r.Method == http.MethodPost:
			w.WriteHeader(http.StatusCreated)
			reply(map[string]any{"Id": "e1"})
		case p == "/exec/e1/start":
			// What HAProxy 3.0 answered: no upgrade.
			w.WriteHeader(http.StatusOK)
		default:
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		}
	}))
	defer srv.Close()
	host := "tcp://" + strings.TrimPrefix(srv.URL, "http://")
	cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()

	_, err = runCapture(ctx, cli, name, []string{"psql", "-V"})
	if !errors.Is(err, ErrExecUpgrade) {
		t.Fatalf("exec through the proxy: %v, want ErrExecUpgrade", err)
	}
	for _, want := range []string{"proxy", host, "docker-socket-proxy", "compose.socket-proxy.yaml", name} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}

	targets, err := Discover(ctx, cli, Options{})
	if !errors.Is(err, ErrExecUpgrade) {
		t.Fatalf("Discover through the proxy: %v, %+v; want ErrExecUpgrade", err, targets)
	}
	t.Logf("discovery through the proxy: %v", err)
	if strings.Contains(err.Error(), "no Postgres") {
		t.Errorf("the error blames the container: %v", err)
	}
}
