package repo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/internal/crypto"
)

// keyFileJSON builds a key file's JSON with the given fields replaced
// (nil deletes a field).
func keyFileJSON(t testing.TB, base []byte, set map[string]any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(base, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range set {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	buf, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

func onlyKey(t *testing.T, be *mem.Backend) (backend.Handle, []byte) {
	t.Helper()
	var hs []backend.Handle
	for _, h := range be.Handles() {
		if h.Type == backend.KeyFile {
			hs = append(hs, h)
		}
	}
	if len(hs) != 1 {
		t.Fatalf("%d key files", len(hs))
	}
	buf, _ := be.Get(hs[0])
	return hs[0], buf
}

func TestKeyFileFormat(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	before := time.Now()
	r, err := Init(ctx, be, "secret", InitOptions{KDF: testKDF, Username: "alice", Hostname: "box"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h, buf := onlyKey(t, be)
	if h.Name != Hash(buf).String() || r.KeyID().String() != h.Name {
		t.Fatalf("key file %s is not named by its hash (%s), KeyID %s", h.Name, Hash(buf), r.KeyID())
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(buf, &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"created", "username", "hostname", "kdf", "N", "r", "p", "salt", "data"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("field %q missing from %s", f, buf)
		}
	}
	kf, err := ParseKeyFile(buf)
	if err != nil {
		t.Fatal(err)
	}
	if kf.KDF != "scrypt" || kf.N != testKDF.N || kf.R != testKDF.R || kf.P != testKDF.P || kf.Username != "alice" || kf.Hostname != "box" {
		t.Fatalf("key file %+v", kf)
	}
	if kf.Created.Before(before.Add(-time.Second)) || kf.Created.After(time.Now().Add(time.Second)) {
		t.Fatalf("created %v", kf.Created)
	}
	var created string
	_ = json.Unmarshal(raw["created"], &created)
	if _, err := time.Parse(time.RFC3339Nano, created); err != nil {
		t.Fatalf("created not RFC 3339: %s", created)
	}
	if len(kf.Salt) != crypto.SaltSize {
		t.Fatalf("salt %d bytes", len(kf.Salt))
	}
	var salt string
	_ = json.Unmarshal(raw["salt"], &salt)
	if salt != base64.StdEncoding.EncodeToString(kf.Salt) {
		t.Fatal("salt not standard padded base64")
	}
	// data is the master key's JSON sealed with the derived key.
	user, err := crypto.DeriveKey(crypto.Params{N: kf.N, R: kf.R, P: kf.P}, kf.Salt, "secret")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := user.Open(nil, kf.Data)
	if err != nil {
		t.Fatal(err)
	}
	var mj struct {
		MAC struct {
			K []byte `json:"k"`
			R []byte `json:"r"`
		} `json:"mac"`
		Encrypt []byte `json:"encrypt"`
	}
	if err := json.Unmarshal(plain, &mj); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mj.Encrypt, r.key.Encrypt[:]) || !bytes.Equal(mj.MAC.K, r.key.MAC.K[:]) || !bytes.Equal(mj.MAC.R, r.key.MAC.R[:]) {
		t.Fatal("sealed master key differs from the repository's key")
	}
	if *user == *r.key {
		t.Fatal("master key is the derived key")
	}
}

func TestParseKeyFile(t *testing.T) {
	_, be := newTestRepo(t, 2, Options{})
	_, good := onlyKey(t, be)
	if _, err := ParseKeyFile(good); err != nil {
		t.Fatal(err)
	}
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }
	cases := map[string][]byte{
		"kdf argon2":     keyFileJSON(t, good, map[string]any{"kdf": "argon2"}),
		"kdf Scrypt":     keyFileJSON(t, good, map[string]any{"kdf": "Scrypt"}),
		"kdf missing":    keyFileJSON(t, good, map[string]any{"kdf": nil}),
		"N missing":      keyFileJSON(t, good, map[string]any{"N": nil}),
		"N 0":            keyFileJSON(t, good, map[string]any{"N": 0}),
		"N 1":            keyFileJSON(t, good, map[string]any{"N": 1}),
		"N 1000":         keyFileJSON(t, good, map[string]any{"N": 1000}),
		"N negative":     keyFileJSON(t, good, map[string]any{"N": -1024}),
		"N huge":         keyFileJSON(t, good, map[string]any{"N": 1 << 30}),
		"N float":        keyFileJSON(t, good, map[string]any{"N": 1024.5}),
		"N string":       keyFileJSON(t, good, map[string]any{"N": "1024"}),
		"r 0":            keyFileJSON(t, good, map[string]any{"r": 0}),
		"p 0":            keyFileJSON(t, good, map[string]any{"p": 0}),
		"p negative":     keyFileJSON(t, good, map[string]any{"p": -1}),
		"salt missing":   keyFileJSON(t, good, map[string]any{"salt": nil}),
		"salt empty":     keyFileJSON(t, good, map[string]any{"salt": ""}),
		"salt not b64":   keyFileJSON(t, good, map[string]any{"salt": "not base64!"}),
		"data missing":   keyFileJSON(t, good, map[string]any{"data": nil}),
		"data empty":     keyFileJSON(t, good, map[string]any{"data": ""}),
		"data 31 bytes":  keyFileJSON(t, good, map[string]any{"data": b64(31)}),
		"data not b64":   keyFileJSON(t, good, map[string]any{"data": "@@@@"}),
		"created bad":    keyFileJSON(t, good, map[string]any{"created": "yesterday"}),
		"truncated":      good[:len(good)/2],
		"empty":          {},
		"null":           []byte("null"),
		"array":          []byte("[]"),
		"empty object":   []byte("{}"),
		"not json":       []byte("this is not a key"),
		"trailing junk":  append(bytes.Clone(good), "x"...),
		"binary garbage": {0xff, 0xfe, 0x00, 0x01},
	}
	for name, buf := range cases {
		if kf, err := ParseKeyFile(buf); err == nil {
			t.Errorf("%s: accepted %+v", name, kf)
		}
	}
	// Valid variations: restic's calibrated parameters, 32 data bytes
	// (shortest sealed object), unknown fields, another salt length.
	for name, buf := range map[string][]byte{
		"restic params": keyFileJSON(t, good, map[string]any{"N": 32768, "r": 8, "p": 9}),
		"data 32 bytes": keyFileJSON(t, good, map[string]any{"data": b64(32)}),
		"extra field":   keyFileJSON(t, good, map[string]any{"future": true}),
		"salt 16 bytes": keyFileJSON(t, good, map[string]any{"salt": b64(16)}),
	} {
		if _, err := ParseKeyFile(buf); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestOpenPasswords(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t, 2, Options{})
	r2, err := Open(ctx, be, "secret", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if r2.KeyID() != r.KeyID() || *r2.key != *r.key || r2.Config() != r.Config() {
		t.Fatal("reopened repository differs")
	}
	for _, pw := range []string{"wrong", "", "Secret", "secret ", "secre"} {
		if _, err := Open(ctx, be, pw, Options{}); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("password %q: got %v", pw, err)
		}
	}
	if _, err := Init(ctx, mem.New(), "", InitOptions{KDF: testKDF}, Options{}); err == nil {
		t.Error("empty password accepted by Init")
	}
	if _, err := Init(ctx, be, "other", InitOptions{KDF: testKDF}, Options{}); err == nil {
		t.Error("Init over an existing repository")
	}
	// No key files at all.
	for _, h := range be.Handles() {
		if h.Type == backend.KeyFile {
			be.Delete(h)
		}
	}
	if _, err := Open(ctx, be, "secret", Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("no keys: got %v", err)
	}
	if _, err := Open(ctx, mem.New(), "secret", Options{}); !errors.Is(err, backend.ErrNoRepository) {
		t.Errorf("empty backend: got %v", err)
	}
}

func TestAddRemoveKey(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t, 2, Options{})
	first := r.KeyID()
	second, err := r.AddKey(ctx, "second password", testKDF, "bob", "host2")
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("same key ID")
	}
	if _, err := r.AddKey(ctx, "", testKDF, "", ""); err == nil {
		t.Fatal("empty password added")
	}
	r2, err := Open(ctx, be, "second password", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if r2.KeyID() != second || *r2.key != *r.key {
		t.Fatalf("opened with key %s, want %s (same master key)", r2.KeyID().Str(), second.Str())
	}
	keys, err := r2.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("%d keys", len(keys))
	}
	for _, k := range keys {
		if k.Current != (k.ID == second) {
			t.Errorf("key %s current=%v", k.ID.Str(), k.Current)
		}
		if k.ID == second && (k.File.Username != "bob" || k.File.Hostname != "host2") {
			t.Errorf("key metadata %+v", k.File)
		}
	}
	if id, err := r2.FindKeyID(ctx, second.String()[:8]); err != nil || id != second {
		t.Fatalf("FindKeyID: %v %v", id, err)
	}

	// The key in use cannot be removed; it stays.
	if err := r2.RemoveKey(ctx, second); err == nil {
		t.Fatal("removed the key in use")
	}
	if _, ok := be.Get(backend.Handle{Type: backend.KeyFile, Name: second.String()}); !ok {
		t.Fatal("key in use is gone")
	}
	if err := r2.RemoveKey(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, "secret", Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("removed password still opens: %v", err)
	}
	if err := r2.RemoveKey(ctx, first); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("removing twice: %v", err)
	}
	r3, err := Open(ctx, be, "second password", Options{})
	if err != nil {
		t.Fatal(err)
	}
	r3.Close()
}

func TestDamagedKeyFiles(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t, 2, Options{})
	goodH, good := onlyKey(t, be)

	// A key file that parses and whose data opens with the password, but
	// holds no valid master key.
	sealedWith := func(plain []byte) []byte {
		kf, err := ParseKeyFile(good)
		if err != nil {
			t.Fatal(err)
		}
		user, err := crypto.DeriveKey(kf.params(), kf.Salt, "secret")
		if err != nil {
			t.Fatal(err)
		}
		data, err := user.Seal(nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		return keyFileJSON(t, good, map[string]any{"data": base64.StdEncoding.EncodeToString(data)})
	}
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, n)) }
	cases := map[string][]byte{
		"not json":         []byte("garbage"),
		"empty":            {},
		"truncated":        good[:len(good)-20],
		"kdf none":         keyFileJSON(t, good, map[string]any{"kdf": "none"}),
		"N 3":              keyFileJSON(t, good, map[string]any{"N": 3}),
		"master not json":  sealedWith([]byte("not json")),
		"master short key": sealedWith([]byte(`{"mac":{"k":"` + b64(15) + `","r":"` + b64(16) + `"},"encrypt":"` + b64(32) + `"}`)),
		"master zero key":  sealedWith([]byte(`{"mac":{"k":"` + b64(16) + `","r":"` + b64(16) + `"},"encrypt":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}`)),
	}
	for caseName, buf := range cases {
		// Named so that it lists before the good key (its content then
		// does not match its name), and named by its content (so the
		// checks after the hash are reached).
		for _, name := range []string{strings.Repeat("0", 63) + "1", Hash(buf).String()} {
			t.Run(caseName+"/"+name[:8], func(t *testing.T) {
				h := backend.Handle{Type: backend.KeyFile, Name: name}
				be.Put(h, buf)
				defer be.Delete(h)

				// The good key still opens, and the damaged one is
				// reported.
				var skipped []SkippedFile
				r2, err := Open(ctx, be, "secret", Options{Skipped: func(s SkippedFile) { skipped = append(skipped, s) }})
				if err != nil {
					t.Fatalf("good key not found next to a damaged one: %v", err)
				}
				r2.Close()
				// The damaged file is skipped only when it lists first.
				for _, s := range skipped {
					if s.Handle != h {
						t.Errorf("reported %v, want only %v", s, h)
					}
					asCorrupt(t, s.Err, "keys/"+name)
				}
				// ListKeys (which parses but does not open key files)
				// lists a file that does not parse as damaged, by name.
				if _, perr := ParseKeyFile(buf); perr != nil || name != Hash(buf).String() {
					keys, err := r.ListKeys(ctx)
					if err != nil {
						t.Fatal(err)
					}
					found := false
					for _, k := range keys {
						if k.ID.String() == name {
							found = true
							if k.Damaged == nil || k.File != nil {
								t.Errorf("ListKeys: %+v, want it damaged", k)
							} else {
								asCorrupt(t, k.Damaged, "keys/"+name)
							}
						} else if k.Damaged != nil {
							t.Errorf("ListKeys: intact key %s listed as damaged: %v", k.ID.Str(), k.Damaged)
						}
					}
					if !found {
						t.Errorf("ListKeys left the damaged key out: %+v", keys)
					}
				}

				// Alone, it is damage naming the file, not a wrong
				// password.
				be.Delete(goodH)
				defer be.Put(goodH, good)
				_, err = Open(ctx, be, "secret", Options{})
				var dke *DamagedKeyError
				if errors.Is(err, ErrWrongPassword) || !errors.As(err, &dke) {
					t.Fatalf("got %v, want a DamagedKeyError", err)
				}
				if !strings.Contains(err.Error(), "keys/"+name) {
					t.Fatalf("error does not name the damaged key: %v", err)
				}
				// The same with a wrong password when the damage shows
				// without the password (the content does not match the
				// name, or does not parse): a damaged key may be that
				// password's key. A key file that is intact as stored but
				// holds no valid key behind the right password looks,
				// to a wrong password, like any other key.
				_, perr := ParseKeyFile(buf)
				_, err = Open(ctx, be, "wrong", Options{})
				if perr != nil || name != Hash(buf).String() {
					if !errors.As(err, &dke) || errors.Is(err, ErrWrongPassword) {
						t.Fatalf("wrong password next to a damaged key only: %v", err)
					}
				} else if !errors.Is(err, ErrWrongPassword) {
					t.Fatalf("wrong password next to an intact key: %v", err)
				}
			})
		}
	}
	// Intact keys and a wrong password: ErrWrongPassword.
	if _, err := Open(ctx, be, "wrong", Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	// Files not named like keys are ignored.
	be.Put(backend.Handle{Type: backend.KeyFile, Name: "tmp-123"}, []byte("x"))
	if _, err := Open(ctx, be, "secret", Options{}); err != nil {
		t.Fatal(err)
	}
	if keys, err := r.ListKeys(ctx); err != nil || len(keys) != 1 {
		t.Fatalf("ListKeys: %d, %v", len(keys), err)
	}
}

// At most 20 key files are tried: a right key that lists 21st is not found.
func TestMaxKeysTried(t *testing.T) {
	ctx := context.Background()
	_, mb := newTestRepo(t, 2, Options{})
	be := &decoysFirst{Backend: mb}
	decoy := func(i int) {
		salt := bytes.Repeat([]byte{byte(i + 1)}, 64)
		data := bytes.Repeat([]byte{byte(i + 1)}, 100)
		kf := KeyFile{Created: time.Unix(0, 0), KDF: "scrypt", N: 2, R: 1, P: 1, Salt: salt, Data: data}
		buf, err := json.Marshal(kf)
		if err != nil {
			t.Fatal(err)
		}
		// Intact (named by its content): another password's key.
		name := Hash(buf).String()
		mb.Put(backend.Handle{Type: backend.KeyFile, Name: name}, buf)
		be.first = append(be.first, name)
	}
	for i := 0; i < maxKeysTried-1; i++ {
		decoy(i)
	}
	r, err := Open(ctx, be, "secret", Options{})
	if err != nil {
		t.Fatalf("the 20th key was not tried: %v", err)
	}
	r.Close()
	decoy(maxKeysTried - 1)
	if _, err := Open(ctx, be, "secret", Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("the 21st key was tried: %v", err)
	}
}

// decoysFirst lists the key files named in first before the others.
type decoysFirst struct {
	backend.Backend
	first []string
}

func (d *decoysFirst) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if t != backend.KeyFile {
		return d.Backend.List(ctx, t, fn)
	}
	var rest []backend.FileInfo
	byName := map[string]backend.FileInfo{}
	if err := d.Backend.List(ctx, t, func(fi backend.FileInfo) error {
		byName[fi.Name] = fi
		if !slices.Contains(d.first, fi.Name) {
			rest = append(rest, fi)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, n := range d.first {
		if err := fn(byName[n]); err != nil {
			return err
		}
	}
	for _, fi := range rest {
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// ---- repositories written by the restic CLI ----
//
// fixtures_test.go walks the fixture repositories (snapshots, nodes, file
// contents, pack headers against the index). This test covers what that one
// does not: the key file as a known answer for scrypt and sealing with
// restic's calibrated parameters, the config's exact fields, and trees
// re-encoding to restic's exact bytes (which is what makes tree blobs
// deduplicate with restic's own).

type keyFixtureRepo struct {
	Name         string            `json:"name"`
	PasswordFile string            `json:"password_file"`
	Config       map[string]any    `json:"config"`
	Files        map[string]int    `json:"files"`
	Snapshots    []json.RawMessage `json:"snapshots"`
}

func loadKeyFixtures(t *testing.T) []keyFixtureRepo {
	t.Helper()
	buf, err := os.ReadFile(filepath.Join("..", "testdata", "fixtures.json"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("no testdata/fixtures.json: fixture repositories not generated")
	}
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Repos []keyFixtureRepo `json:"repos"`
	}
	if err := json.Unmarshal(buf, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Repos) == 0 {
		t.Skip("fixtures.json lists no repositories")
	}
	return f.Repos
}

func normalizeJSON(t *testing.T, v any) any {
	t.Helper()
	buf, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(buf, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestResticFixtureKeysAndTrees(t *testing.T) {
	for _, fx := range loadKeyFixtures(t) {
		t.Run(fx.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pwBuf, err := os.ReadFile(filepath.Join("..", "testdata", fx.PasswordFile))
			if err != nil {
				t.Fatal(err)
			}
			password := strings.TrimRight(string(pwBuf), "\r\n")
			// Read-only use: no copy needed.
			be, err := local.Open(filepath.Join("..", "testdata", fx.Name))
			if err != nil {
				t.Fatal(err)
			}
			defer be.Close()

			var keyNames []string
			if err := be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
				keyNames = append(keyNames, fi.Name)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(keyNames) == 0 || len(keyNames) != fx.Files["keys"] {
				t.Fatalf("%d key files, fixtures.json says %d", len(keyNames), fx.Files["keys"])
			}
			kbuf, err := backend.LoadAll(ctx, be, backend.Handle{Type: backend.KeyFile, Name: keyNames[0]})
			if err != nil {
				t.Fatal(err)
			}
			if Hash(kbuf).String() != keyNames[0] {
				t.Fatal("restic's key file is not named by its hash")
			}
			kf, err := ParseKeyFile(kbuf)
			if err != nil {
				t.Fatal(err)
			}
			if len(kf.Salt) != crypto.SaltSize || kf.N < 1<<15 {
				t.Fatalf("unexpected restic key parameters: N=%d r=%d p=%d, %d-byte salt", kf.N, kf.R, kf.P, len(kf.Salt))
			}
			master, err := kf.openMaster(password)
			if err != nil {
				t.Fatalf("restic's key file does not open: %v", err)
			}
			rawCfg, err := backend.LoadAll(ctx, be, backend.Handle{Type: backend.ConfigFile})
			if err != nil {
				t.Fatal(err)
			}
			cfgPlain, err := master.Open(nil, rawCfg)
			if err != nil {
				t.Fatalf("config does not open with restic's master key: %v", err)
			}
			var cfgMap map[string]any
			if err := json.Unmarshal(cfgPlain, &cfgMap); err != nil {
				t.Fatalf("config plaintext is not JSON (no version byte expected): %v", err)
			}
			if !reflect.DeepEqual(normalizeJSON(t, cfgMap), normalizeJSON(t, fx.Config)) {
				t.Fatalf("config %v, fixtures.json %v", cfgMap, fx.Config)
			}

			r, err := Open(ctx, be, password, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.KeyID().String() != keyNames[0] || *r.key != *master {
				t.Fatal("Open chose another key")
			}
			ourCfg, _ := json.Marshal(r.Config())
			var ourMap map[string]any
			_ = json.Unmarshal(ourCfg, &ourMap)
			if !reflect.DeepEqual(normalizeJSON(t, ourMap), normalizeJSON(t, fx.Config)) {
				t.Fatalf("decoded config %s, fixtures.json %v", ourCfg, fx.Config)
			}

			idx, err := r.Index(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r.Config().Version < 2 {
				for pack, blobs := range idx.PackBlobs() {
					for _, b := range blobs {
						if b.IsCompressed() {
							t.Fatalf("pack %s: compressed blob in a version 1 repository", pack.Str())
						}
					}
				}
			}

			// Every tree blob re-encodes to restic's exact bytes.
			sns, err := r.ListSnapshots(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(sns) != len(fx.Snapshots) || len(sns) == 0 {
				t.Fatalf("%d snapshots, fixtures.json has %d", len(sns), len(fx.Snapshots))
			}
			trees := map[ID]bool{}
			for _, sn := range sns {
				trees[*sn.Tree] = true
				err := r.Walk(ctx, *sn.Tree, func(p string, n *Node) error {
					if n.Type == NodeDir {
						trees[*n.Subtree] = true
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			for id := range trees {
				raw, err := r.LoadBlob(ctx, BlobHandle{ID: id, Type: TreeBlob})
				if err != nil {
					t.Fatal(err)
				}
				tr, err := DecodeTree(raw)
				if err != nil {
					t.Fatal(err)
				}
				again, err := EncodeTree(tr)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(again, raw) {
					t.Errorf("tree %s does not re-encode to restic's bytes:\nrestic %s\nours   %s", id.Str(), raw, again)
				}
			}
		})
	}
}
