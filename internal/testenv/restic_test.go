package testenv

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestResticVersion(t *testing.T) {
	EachRestic(t, func(t *testing.T, r *ResticCLI) {
		res := r.MustRun(t, "", "", nil, "version")
		if want := "restic " + r.Version; !strings.HasPrefix(string(res.Stdout), want) {
			t.Fatalf("restic version printed %q, want prefix %q", res.Stdout, want)
		}
	})
}

func TestResticVersionsHavePaths(t *testing.T) {
	for _, v := range ResticVersions() {
		if ResticPath(v) == "" {
			t.Errorf("no path for restic %s", v)
		}
	}
	if ResticPath("0.9") != "" {
		t.Errorf("unknown version has a path")
	}
}

// TestResticRunAndStream writes a stdin snapshot through Run (password in
// the environment, data on stdin) and reads it back through Stream.
func TestResticRunAndStream(t *testing.T) {
	// A password or repository in the developer's environment must not
	// reach restic.
	t.Setenv("RESTIC_PASSWORD", "inherited-wrong-password")
	t.Setenv("RESTIC_REPOSITORY", "/nonexistent/inherited")

	data := make([]byte, 3<<20+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(data)

	EachRestic(t, func(t *testing.T, r *ResticCLI) {
		repo := filepath.Join(t.TempDir(), "repo")
		const password = "test-password"
		r.MustRun(t, repo, password, nil, "init")
		r.MustRun(t, repo, password, bytes.NewReader(data), "backup", "--stdin", "--stdin-filename", "data.bin", "--host", "testenv")

		out := r.MustRun(t, repo, password, nil, "snapshots", "--json")
		var snaps []struct {
			ID    string   `json:"id"`
			Paths []string `json:"paths"`
		}
		if err := json.Unmarshal(out.Stdout, &snaps); err != nil {
			t.Fatalf("snapshots --json: %v\n%s", err, out.Stdout)
		}
		if len(snaps) != 1 || !slices.Equal(snaps[0].Paths, []string{"/data.bin"}) {
			t.Fatalf("snapshots: %+v", snaps)
		}

		rc, wait := r.Stream(t.Context(), repo, password, "dump", snaps[0].ID, "/data.bin")
		h := sha256.New()
		n, err := io.Copy(h, rc)
		if err != nil {
			t.Fatalf("reading dump: %v", err)
		}
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		if n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("dump gave %d bytes %x, want %d bytes %x", n, h.Sum(nil), len(data), want)
		}

		// A wrong password is a non-zero exit code, not an error of Run.
		res, err := r.Run(t.Context(), repo, "wrong-password", nil, "snapshots")
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if res.ExitCode == 0 || res.Err() == nil {
			t.Fatalf("wrong password: exit code 0\nstdout: %s", res.Stdout)
		}

		// A failing Stream reports through wait.
		rc, wait = r.Stream(t.Context(), repo, password, "dump", snaps[0].ID, "/no-such-file")
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("reading failed dump: %v", err)
		}
		if err := wait(); err == nil {
			t.Fatal("dump of a missing file: wait returned nil")
		}

		// The password file route works too (extra env wins over defaults).
		pwFile := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(pwFile, []byte(password), 0o600); err != nil {
			t.Fatal(err)
		}
		r.WithEnv("RESTIC_PASSWORD_FILE="+pwFile).MustRun(t, repo, "", nil, "snapshots")
	})
}

func TestResticStreamNotStarted(t *testing.T) {
	r := &ResticCLI{Version: "none", Path: filepath.Join(t.TempDir(), "missing"), CacheDir: t.TempDir()}
	rc, wait := r.Stream(t.Context(), "", "", "version")
	if _, err := io.ReadAll(rc); err == nil {
		t.Error("reading a stream that never started: no error")
	}
	if err := wait(); err == nil {
		t.Error("wait of a stream that never started: no error")
	}
	if _, err := r.Run(t.Context(), "", "", nil, "version"); err == nil {
		t.Error("Run of a missing binary: no error")
	}
}

// fixtures is the part of testdata/fixtures.json this test reads.
type fixtures struct {
	Password string `json:"password"`
	Repos    []struct {
		Name         string `json:"name"`
		PasswordFile string `json:"password_file"`
		Snapshots    []struct {
			ID    string   `json:"id"`
			Paths []string `json:"paths"`
			Nodes []struct {
				Path       string `json:"path"`
				PathHex    string `json:"path_hex"`
				Type       string `json:"type"`
				Size       int64  `json:"size"`
				SHA256     string `json:"sha256"`
				LinkTarget string `json:"linktarget"`
			} `json:"nodes"`
		} `json:"snapshots"`
	} `json:"repos"`
}

const fixtureDir = "../../testdata"

// TestFixturesWithRestic checks the committed fixture repositories against
// fixtures.json with both restic versions: check --read-data, the snapshot
// list, and every file's bytes (through a tar dump of each snapshot).
func TestFixturesWithRestic(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fixtureDir, "fixtures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx fixtures
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Repos) < 3 {
		t.Fatalf("fixtures.json lists %d repositories, want 3", len(fx.Repos))
	}
	EachRestic(t, func(t *testing.T, r *ResticCLI) {
		for _, fr := range fx.Repos {
			t.Run(fr.Name, func(t *testing.T) {
				pw, err := os.ReadFile(filepath.Join(fixtureDir, fr.PasswordFile))
				if err != nil {
					t.Fatal(err)
				}
				if string(pw) != fx.Password {
					t.Fatalf("%s holds %q, fixtures.json says %q", fr.PasswordFile, pw, fx.Password)
				}
				// restic writes lock files: work on a copy, never on testdata.
				repo := filepath.Join(t.TempDir(), fr.Name)
				if err := os.CopyFS(repo, os.DirFS(filepath.Join(fixtureDir, fr.Name))); err != nil {
					t.Fatal(err)
				}
				password := string(pw)

				res := r.MustRun(t, repo, password, nil, "check", "--read-data")
				if !strings.Contains(string(res.Stdout), "no errors were found") {
					t.Fatalf("check --read-data:\n%s\n%s", res.Stdout, res.Stderr)
				}

				res = r.MustRun(t, repo, password, nil, "snapshots", "--json")
				var snaps []struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(res.Stdout, &snaps); err != nil {
					t.Fatal(err)
				}
				var got, want []string
				for _, s := range snaps {
					got = append(got, s.ID)
				}
				for _, s := range fr.Snapshots {
					want = append(want, s.ID)
				}
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("snapshots %v, fixtures.json says %v", got, want)
				}

				for _, s := range fr.Snapshots {
					type entry struct {
						typ, sha, link string
						size           int64
					}
					wantNodes := map[string]entry{}
					for _, n := range s.Nodes {
						p := n.Path
						if n.PathHex != "" {
							raw, err := hex.DecodeString(n.PathHex)
							if err != nil {
								t.Fatal(err)
							}
							p = string(raw)
						}
						wantNodes[p] = entry{n.Type, n.SHA256, n.LinkTarget, n.Size}
					}
					gotNodes := map[string]entry{}
					rc, wait := r.Stream(t.Context(), repo, password, "dump", "--archive", "tar", s.ID, "/")
					tr := tar.NewReader(rc)
					for {
						hdr, err := tr.Next()
						if errors.Is(err, io.EOF) {
							break
						}
						if err != nil {
							rc.Close()
							wait()
							t.Fatalf("snapshot %s: tar: %v", s.ID[:8], err)
						}
						p := "/" + strings.TrimSuffix(hdr.Name, "/")
						switch hdr.Typeflag {
						case tar.TypeDir:
							gotNodes[p] = entry{typ: "dir"}
						case tar.TypeSymlink:
							gotNodes[p] = entry{typ: "symlink", link: hdr.Linkname}
						case tar.TypeReg:
							h := sha256.New()
							n, err := io.Copy(h, tr)
							if err != nil {
								t.Fatal(err)
							}
							gotNodes[p] = entry{typ: "file", sha: hex.EncodeToString(h.Sum(nil)), size: n}
						default:
							t.Errorf("snapshot %s: %q: unexpected tar type %c", s.ID[:8], p, hdr.Typeflag)
						}
					}
					rc.Close()
					if err := wait(); err != nil {
						t.Fatal(err)
					}
					for p, w := range wantNodes {
						if g, ok := gotNodes[p]; !ok {
							t.Errorf("snapshot %s: %q missing from restic's dump", s.ID[:8], p)
						} else if g != w {
							t.Errorf("snapshot %s: %q: restic dump gives %+v, fixtures.json says %+v", s.ID[:8], p, g, w)
						}
					}
					for p := range gotNodes {
						if _, ok := wantNodes[p]; !ok {
							t.Errorf("snapshot %s: restic's dump has %q, fixtures.json does not", s.ID[:8], p)
						}
					}
				}

				// One plain `restic dump` of a single large file.
				for _, s := range fr.Snapshots {
					if !slices.Equal(s.Paths, []string{"/dump.sql"}) {
						continue
					}
					rc, wait := r.Stream(t.Context(), repo, password, "dump", s.ID, "/dump.sql")
					h := sha256.New()
					_, err := io.Copy(h, rc)
					rc.Close()
					if werr := wait(); werr != nil || err != nil {
						t.Fatalf("dump /dump.sql: %v %v", werr, err)
					}
					if got := hex.EncodeToString(h.Sum(nil)); got != s.Nodes[0].SHA256 {
						t.Errorf("dump /dump.sql: sha256 %s, fixtures.json says %s", got, s.Nodes[0].SHA256)
					}
				}
			})
		}
	})
}

// TestFixturesAreInGit guards against fixtures that only exist on the
// machine that made them: every repository listed must have a config, a
// key, snapshots, index and data files on disk here.
func TestFixturesAreInGit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fixtureDir, "fixtures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx fixtures
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	for _, fr := range fx.Repos {
		counts := map[string]int{}
		root := filepath.Join(fixtureDir, fr.Name)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			counts[strings.Split(filepath.ToSlash(rel), "/")[0]]++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{"config", "keys", "snapshots", "index", "data"} {
			if counts[dir] == 0 {
				t.Errorf("%s: no %s", fr.Name, dir)
			}
		}
		if counts["snapshots"] != len(fr.Snapshots) {
			t.Errorf("%s: %d snapshot files, fixtures.json lists %d", fr.Name, counts["snapshots"], len(fr.Snapshots))
		}
	}
}
