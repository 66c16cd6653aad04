package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/internal/crypto"
)

// restic's KDF calibration targets: half a second and 60 MiB.
const (
	kdfTarget = 500 * time.Millisecond
	kdfMemory = 60 << 20
	// maxKeysTried bounds the scrypt work a wrong password can cost, as
	// restic does.
	maxKeysTried = 20
)

// KeyFile is a key file as stored: plain JSON holding the master key sealed
// with a key derived from a password.
type KeyFile struct {
	Created  time.Time `json:"created"`
	Username string    `json:"username"`
	Hostname string    `json:"hostname"`
	KDF      string    `json:"kdf"`
	N        int       `json:"N"`
	R        int       `json:"r"`
	P        int       `json:"p"`
	Salt     []byte    `json:"salt"`
	Data     []byte    `json:"data"`
}

// ParseKeyFile decodes and sanity-checks a key file's JSON.
func ParseKeyFile(buf []byte) (*KeyFile, error) {
	var k KeyFile
	if err := json.Unmarshal(buf, &k); err != nil {
		return nil, fmt.Errorf("decode key file: %w", err)
	}
	if k.KDF != "scrypt" {
		return nil, fmt.Errorf("unsupported key derivation %q", k.KDF)
	}
	if err := k.params().Validate(); err != nil {
		return nil, err
	}
	if len(k.Salt) == 0 {
		return nil, errors.New("key file has no salt")
	}
	if len(k.Data) < crypto.Overhead {
		return nil, errors.New("key file data too short")
	}
	return &k, nil
}

func (k *KeyFile) params() crypto.Params { return crypto.Params{N: k.N, R: k.R, P: k.P} }

// openMaster derives the user key from password and unseals the master key.
func (k *KeyFile) openMaster(password string) (*crypto.Key, error) {
	user, err := crypto.DeriveKey(k.params(), k.Salt, password)
	if err != nil {
		return nil, err
	}
	plain, err := user.Open(nil, k.Data)
	if err != nil {
		return nil, err
	}
	master := &crypto.Key{}
	if err := json.Unmarshal(plain, master); err != nil {
		return nil, err
	}
	return master, nil
}

// searchKey tries key files until one opens with password.
func searchKey(ctx context.Context, be backend.Backend, password string) (*crypto.Key, ID, error) {
	var names []string
	err := be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, ID{}, fmt.Errorf("list keys: %w", err)
	}
	if len(names) == 0 {
		return nil, ID{}, fmt.Errorf("%s has no key files: %w", be.Location(), ErrWrongPassword)
	}
	var damaged []error
	for i, name := range names {
		if i >= maxKeysTried {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, ID{}, err
		}
		h := backend.Handle{Type: backend.KeyFile, Name: name}
		buf, err := backend.LoadAll(ctx, be, h)
		if err != nil {
			return nil, ID{}, fmt.Errorf("load %v: %w", h, err)
		}
		kf, err := ParseKeyFile(buf)
		if err != nil {
			damaged = append(damaged, corrupt(h.String(), "%w", err))
			continue
		}
		master, err := kf.openMaster(password)
		if err != nil {
			if !errors.Is(err, crypto.ErrUnauthenticated) {
				damaged = append(damaged, corrupt(h.String(), "%w", err))
			}
			continue
		}
		id, err := ParseID(name)
		if err != nil {
			return nil, ID{}, err
		}
		return master, id, nil
	}
	if len(damaged) > 0 {
		return nil, ID{}, fmt.Errorf("%w (also: %w)", ErrWrongPassword, errors.Join(damaged...))
	}
	return nil, ID{}, ErrWrongPassword
}

// addKey seals the master key under password and stores a new key file.
func (r *Repository) addKey(ctx context.Context, password string, p crypto.Params, username, hostname string) (ID, error) {
	if username == "" {
		username = currentUser()
	}
	if hostname == "" {
		hostname = currentHost()
	}
	salt, err := crypto.NewSalt()
	if err != nil {
		return ID{}, err
	}
	user, err := crypto.DeriveKey(p, salt, password)
	if err != nil {
		return ID{}, err
	}
	masterJSON, err := json.Marshal(r.key)
	if err != nil {
		return ID{}, err
	}
	data, err := user.Seal(nil, masterJSON)
	if err != nil {
		return ID{}, err
	}
	kf := KeyFile{
		Created: time.Now(), Username: username, Hostname: hostname,
		KDF: "scrypt", N: p.N, R: p.R, P: p.P, Salt: salt, Data: data,
	}
	buf, err := json.Marshal(kf)
	if err != nil {
		return ID{}, err
	}
	id := Hash(buf)
	h := backend.Handle{Type: backend.KeyFile, Name: id.String()}
	if err := r.be.Save(ctx, h, backend.BytesSource(buf)); err != nil {
		return ID{}, fmt.Errorf("save %v: %w", h, err)
	}
	return id, nil
}

// AddKey adds a key file for password, calibrating scrypt (or using kdf if
// non-nil), and returns its ID.
func (r *Repository) AddKey(ctx context.Context, password string, kdf *crypto.Params, username, hostname string) (ID, error) {
	if password == "" {
		return ID{}, errors.New("add key: empty password")
	}
	p := crypto.Calibrate(kdfTarget, kdfMemory)
	if kdf != nil {
		p = *kdf
	}
	return r.addKey(ctx, password, p, username, hostname)
}

// KeyInfo describes one key file for listing.
type KeyInfo struct {
	ID      ID
	Current bool
	File    *KeyFile
}

// ListKeys loads every key file's metadata (without opening them).
func (r *Repository) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	err := r.be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		id, err := ParseID(fi.Name)
		if err != nil {
			return err
		}
		h := backend.Handle{Type: backend.KeyFile, Name: fi.Name}
		buf, err := backend.LoadAll(ctx, r.be, h)
		if err != nil {
			return fmt.Errorf("load %v: %w", h, err)
		}
		kf, err := ParseKeyFile(buf)
		if err != nil {
			return corrupt(h.String(), "%w", err)
		}
		out = append(out, KeyInfo{ID: id, Current: id == r.keyID, File: kf})
		return nil
	})
	return out, err
}

// RemoveKey deletes key file id. The key that opened the repository cannot
// be removed (that would leave the caller unable to prove it can open it).
func (r *Repository) RemoveKey(ctx context.Context, id ID) error {
	if id == r.keyID {
		return fmt.Errorf("refusing to remove key %s: it is the key in use", id.Str())
	}
	h := backend.Handle{Type: backend.KeyFile, Name: id.String()}
	if err := r.be.Remove(ctx, h); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// FindKeyID resolves a full or short key ID.
func (r *Repository) FindKeyID(ctx context.Context, prefix string) (ID, error) {
	return r.FindFile(ctx, backend.KeyFile, prefix)
}
