//go:build ignore

// gen makes the deterministic content that testdata/make-fixtures.sh backs up
// with the real restic CLIs, and describes the resulting repositories for
// testdata/fixtures.json. It is run only by that script:
//
//	go build -o GEN testdata/gen/main.go
//	GEN sql SIZE SEED > FILE      SQL-like text (compressible, chunkable)
//	GEN bin SIZE SEED > FILE      pseudo-random bytes (incompressible)
//	GEN tree DIR                  the file tree with odd names (DIR/tree)
//	GEN blobs PATH                number of content blobs of PATH in the
//	                              newest snapshot (RESTIC, RESTIC_REPOSITORY,
//	                              RESTIC_PASSWORD_FILE from the environment)
//	GEN describe NAME SRC ...     one repository as JSON (see below)
//	GEN merge PASSWORD FILE...    fixtures.json from describe outputs
//
// Content comes from math/rand/v2's PCG with fixed seeds, whose output the Go
// project keeps stable, so the bytes are the same on every run.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

func main() {
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		fail("usage: gen sql|bin|tree|blobs|describe|merge ...")
	}
	var err error
	switch args[0] {
	case "sql":
		err = writeStream(args[1:], sqlText)
	case "bin":
		err = writeStream(args[1:], randomBytes)
	case "tree":
		if len(args) != 2 {
			fail("usage: gen tree DIR")
		}
		err = makeTree(args[1])
	case "blobs":
		if len(args) != 2 {
			fail("usage: gen blobs PATH")
		}
		err = countBlobs(args[1])
	case "describe":
		if len(args) != 4 {
			fail("usage: gen describe NAME SRC INIT-ARGS")
		}
		err = describe(args[1], args[2], strings.Fields(args[3]))
	case "merge":
		if len(args) < 3 {
			fail("usage: gen merge PASSWORD FILE...")
		}
		err = merge(args[1], args[2:])
	default:
		fail("unknown command " + args[0])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "gen:", msg)
	os.Exit(1)
}

// --- content -----------------------------------------------------------------

func writeStream(args []string, fn func(size int, seed uint64) []byte) error {
	if len(args) != 2 {
		return errors.New("usage: gen sql|bin SIZE SEED")
	}
	size, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	seed, err := strconv.ParseUint(args[1], 10, 64)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(fn(size, seed))
	return err
}

// randomBytes is size pseudo-random bytes.
func randomBytes(size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5ca1ab1e))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var words = strings.Fields(`alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima
mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu
backup restore snapshot tenant invoice customer order payment account session token
pending active archived deleted north south east west red green blue amber`)

// sqlText looks like a plain-text pg_dump: a header, then COPY rows of
// pseudo-random values. It compresses several times over (the repository
// compresses in version 2) while still having enough entropy for the
// content-defined chunker to cut it into several blobs.
func sqlText(size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0xd00dfeed))
	var b bytes.Buffer
	b.WriteString("--\n-- PostgreSQL database dump (scalr-backup test fixture, synthetic)\n--\n\n")
	b.WriteString("SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n\n")
	table := 0
	for b.Len() < size {
		table++
		fmt.Fprintf(&b, "CREATE TABLE public.t%03d (id bigint NOT NULL, name text, amount numeric(12,2), state text, note text);\n", table)
		fmt.Fprintf(&b, "COPY public.t%03d (id, name, amount, state, note) FROM stdin;\n", table)
		rows := 200 + r.IntN(800)
		for i := 1; i <= rows && b.Len() < size; i++ {
			fmt.Fprintf(&b, "%d\t%s %s\t%d.%02d\t%s\t", i, words[r.IntN(len(words))], words[r.IntN(len(words))],
				r.IntN(100000), r.IntN(100), words[r.IntN(len(words))])
			for n := r.IntN(8); n >= 0; n-- {
				b.WriteString(words[r.IntN(len(words))])
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%08x\n", r.Uint32())
		}
		b.WriteString("\\.\n\n")
	}
	return b.Bytes()[:size]
}

// makeTree writes DIR/tree: nested folders, an empty file and folder,
// symlinks (to a file, to a folder, dangling), odd names, several modes and
// a duplicate file. Times are set afterwards by the script (touch -h).
func makeTree(dir string) error {
	root := filepath.Join(dir, "tree")
	files := []struct {
		name string
		mode os.FileMode
		data []byte
	}{
		{"README.txt", 0o644, []byte("scalr-backup fixture tree.\nEvery name here is chosen to trip up a restic reader.\n")},
		{"empty", 0o644, nil},
		{"with space.txt", 0o644, []byte("a name with spaces\n")},
		{"ünïcødé.txt", 0o644, []byte("unicode name, NFC as typed\n")},
		{"tab\there.txt", 0o644, []byte("a name with a tab\n")},
		{"new\nline.txt", 0o644, []byte("a name with a newline\n")},
		{`quote"and\back\slash.txt`, 0o644, []byte("a name with a double quote and backslashes\n")},
		{"bad\xffutf8.bin", 0o644, []byte("a name that is not valid UTF-8\n")},
		{"script.sh", 0o755, []byte("#!/bin/sh\necho fixture\n")},
		{"readonly.txt", 0o444, []byte("read-only file\n")},
		{"nested/a/sibling.txt", 0o644, []byte("next to b/\n")},
		{"nested/a/b/c/deep.bin", 0o600, randomBytes(96<<10, 3)},
		{"dup-of-deep.bin", 0o644, randomBytes(96<<10, 3)},
		{"medium.sql", 0o644, sqlText(40<<10, 4)},
	}
	if err := os.MkdirAll(filepath.Join(root, "nested", "empty-dir"), 0o755); err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(root, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, 0o600); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	links := [][2]string{
		{"link-to-readme", "README.txt"},
		{"link-to-dir", "nested/a"},
		{"dangling-link", "does/not/exist"},
	}
	for _, l := range links {
		if err := os.Symlink(l[1], filepath.Join(root, l[0])); err != nil {
			return err
		}
	}
	return nil
}

// --- reading a repository with the restic CLI ----------------------------------

func restic(args ...string) ([]byte, error) {
	bin := os.Getenv("RESTIC")
	if bin == "" {
		return nil, errors.New("RESTIC is not set")
	}
	cmd := exec.Command(bin, append([]string{"--no-lock", "--quiet"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("restic %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

type snapshotJSON struct {
	ID       string   `json:"id"`
	ShortID  string   `json:"short_id"`
	Time     string   `json:"time"`
	Tree     string   `json:"tree"`
	Paths    []string `json:"paths"`
	Hostname string   `json:"hostname"`
	Username string   `json:"username"`
	Tags     []string `json:"tags"`
	// ProgramVersion is written by restic 0.17 and later.
	ProgramVersion string `json:"program_version,omitempty"`
}

type nodeJSON struct {
	Name          string   `json:"name"`
	Type          string   `json:"type"`
	Mode          uint32   `json:"mode"`
	Mtime         string   `json:"mtime"`
	Size          uint64   `json:"size"`
	LinkTarget    string   `json:"linktarget"`
	LinkTargetRaw []byte   `json:"linktarget_raw"`
	Content       []string `json:"content"`
	Subtree       string   `json:"subtree"`
}

func snapshots() ([]snapshotJSON, error) {
	out, err := restic("snapshots", "--json")
	if err != nil {
		return nil, err
	}
	var snaps []snapshotJSON
	if err := json.Unmarshal(out, &snaps); err != nil {
		return nil, err
	}
	sort.Slice(snaps, func(i, j int) bool { return snaps[i].Time < snaps[j].Time })
	return snaps, nil
}

// tree reads one tree blob. Node names are stored the way restic stores
// them: Go-quoted without the outer quotes, so they are unquoted here.
func tree(id string) ([]nodeJSON, error) {
	out, err := restic("cat", "blob", id)
	if err != nil {
		return nil, err
	}
	var t struct {
		Nodes []nodeJSON `json:"nodes"`
	}
	if err := json.Unmarshal(out, &t); err != nil {
		return nil, fmt.Errorf("tree %s: %v", id, err)
	}
	for i := range t.Nodes {
		name, err := strconv.Unquote(`"` + t.Nodes[i].Name + `"`)
		if err != nil {
			return nil, fmt.Errorf("tree %s: node name %q: %v", id, t.Nodes[i].Name, err)
		}
		t.Nodes[i].Name = name
	}
	return t.Nodes, nil
}

// walk calls fn for every node below tree id, depth first in tree order.
func walk(id, dir string, fn func(p string, n nodeJSON) error) error {
	nodes, err := tree(id)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		p := path.Join(dir, n.Name)
		if err := fn(p, n); err != nil {
			return err
		}
		if n.Type == "dir" {
			if err := walk(n.Subtree, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func countBlobs(file string) error {
	snaps, err := snapshots()
	if err != nil {
		return err
	}
	if len(snaps) == 0 {
		return errors.New("no snapshots")
	}
	found := -1
	err = walk(snaps[len(snaps)-1].Tree, "/", func(p string, n nodeJSON) error {
		if p == file {
			found = len(n.Content)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if found < 0 {
		return fmt.Errorf("%s not in the newest snapshot", file)
	}
	fmt.Println(found)
	return nil
}

// --- describing a repository --------------------------------------------------

// Repo is one fixture repository in fixtures.json.
type Repo struct {
	Name         string          `json:"name"`          // folder under testdata/
	PasswordFile string          `json:"password_file"` // under testdata/
	WrittenBy    string          `json:"written_by"`    // `restic version` of the writer
	InitArgs     []string        `json:"init_args"`
	Config       json.RawMessage `json:"config"` // decrypted config, as `restic cat config` prints it
	Files        map[string]int  `json:"files"`  // number of files per folder (keys, snapshots, index, data)
	Bytes        int64           `json:"bytes"`  // total size of the repository's files
	Snapshots    []Snapshot      `json:"snapshots"`
}

// Snapshot is one snapshot and every node in it.
type Snapshot struct {
	snapshotJSON
	Nodes []Node `json:"nodes"`
}

// Node is one file, folder or symlink of a snapshot. Path is as `restic ls`
// prints it ("/dump.sql", "/tree/nested/a"), with node names unquoted the
// way restic does; PathHex is set when the path is not valid UTF-8 (Path
// then holds U+FFFD in place of the bad bytes).
type Node struct {
	Path       string   `json:"path"`
	PathHex    string   `json:"path_hex,omitempty"`
	Type       string   `json:"type"`
	Mode       uint32   `json:"mode"`
	Mtime      string   `json:"mtime"`
	Size       uint64   `json:"size"`             // 0 except for files
	SHA256     string   `json:"sha256,omitempty"` // files only
	Content    []string `json:"content"`          // blob IDs: [] for an empty file, null unless a file
	LinkTarget string   `json:"linktarget,omitempty"`
}

// describe reads the repository in RESTIC_REPOSITORY with the CLI in RESTIC
// and checks every file against SRC, the folder that mirrors the snapshots'
// contents (SRC/dump.sql, SRC/nested/dir/file.bin, SRC/tree/...).
func describe(name, src string, initArgs []string) error {
	repoDir := os.Getenv("RESTIC_REPOSITORY")
	r := Repo{Name: name, PasswordFile: name + ".password", InitArgs: initArgs, Files: map[string]int{}}
	out, err := restic("version")
	if err != nil {
		return err
	}
	r.WrittenBy = strings.TrimSpace(string(out))
	if out, err = restic("cat", "config"); err != nil {
		return err
	}
	var cfg any
	if err := json.Unmarshal(out, &cfg); err != nil {
		return err
	}
	if r.Config, err = json.Marshal(cfg); err != nil {
		return err
	}
	err = filepath.WalkDir(repoDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repoDir, p)
		top := strings.Split(filepath.ToSlash(rel), "/")[0]
		if top != "config" {
			r.Files[top]++
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		r.Bytes += fi.Size()
		return nil
	})
	if err != nil {
		return err
	}
	snaps, err := snapshots()
	if err != nil {
		return err
	}
	for _, s := range snaps {
		snap := Snapshot{snapshotJSON: s}
		err := walk(s.Tree, "/", func(p string, n nodeJSON) error {
			node := Node{Path: p, Type: n.Type, Mode: n.Mode, Mtime: n.Mtime}
			if !utf8.ValidString(p) {
				node.PathHex = hex.EncodeToString([]byte(p))
			}
			srcPath := filepath.Join(src, filepath.FromSlash(p))
			switch n.Type {
			case "file":
				node.Size = n.Size
				node.Content = n.Content
				sum, err := fileHash(s.ID, p, n)
				if err != nil {
					return err
				}
				node.SHA256 = sum
				want, wantSize, err := hashFile(srcPath)
				if err != nil {
					return fmt.Errorf("snapshot %s %q: source: %v", s.ShortID, p, err)
				}
				if sum != want || n.Size != wantSize {
					return fmt.Errorf("snapshot %s %q: restic has %d bytes %s, source has %d bytes %s",
						s.ShortID, p, n.Size, sum, wantSize, want)
				}
			case "symlink":
				node.LinkTarget = n.LinkTarget
				if n.LinkTargetRaw != nil {
					node.LinkTarget = string(n.LinkTargetRaw)
				}
				want, err := os.Readlink(srcPath)
				if err != nil || want != node.LinkTarget {
					return fmt.Errorf("snapshot %s %q: link target %q, source %q (%v)", s.ShortID, p, node.LinkTarget, want, err)
				}
			}
			snap.Nodes = append(snap.Nodes, node)
			return nil
		})
		if err != nil {
			return err
		}
		r.Snapshots = append(r.Snapshots, snap)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// fileHash is the SHA-256 of a file as `restic dump` streams it, checked
// against the same bytes put together from `restic cat blob` of its content.
func fileHash(snapID, p string, n nodeJSON) (string, error) {
	bin := os.Getenv("RESTIC")
	cmd := exec.Command(bin, "--no-lock", "--quiet", "dump", snapID, p)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	h := sha256.New()
	size, err := io.Copy(h, stdout)
	if werr := cmd.Wait(); werr != nil || err != nil {
		return "", fmt.Errorf("restic dump %s %q: %v %v: %s", snapID, p, werr, err, stderr.Bytes())
	}
	dumped := hex.EncodeToString(h.Sum(nil))
	if uint64(size) != n.Size {
		return "", fmt.Errorf("restic dump %s %q: %d bytes, node size %d", snapID, p, size, n.Size)
	}
	h.Reset()
	for _, id := range n.Content {
		blob, err := restic("cat", "blob", id)
		if err != nil {
			return "", err
		}
		if got := sha256.Sum256(blob); hex.EncodeToString(got[:]) != id {
			return "", fmt.Errorf("blob %s hashes to %x", id, got)
		}
		h.Write(blob)
	}
	if joined := hex.EncodeToString(h.Sum(nil)); joined != dumped {
		return "", fmt.Errorf("%q: dump gives %s, its blobs give %s", p, dumped, joined)
	}
	return dumped, nil
}

func hashFile(p string) (string, uint64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), uint64(n), err
}

// Fixtures is testdata/fixtures.json.
type Fixtures struct {
	Comment  string `json:"comment"`
	Password string `json:"password"`
	Repos    []Repo `json:"repos"`
}

func merge(password string, files []string) error {
	f := Fixtures{
		Comment: "Written by testdata/make-fixtures.sh from repositories it made with the real restic CLIs; " +
			"do not edit. Paths are as `restic ls` prints them; sha256 is of the file's bytes.",
		Password: password,
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		var r Repo
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		f.Repos = append(f.Repos, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(f)
}
