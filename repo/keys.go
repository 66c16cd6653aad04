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

// loadKeyFile loads key file h and checks it: its content must hash to its
// name (as restic 0.16+ checks every file it loads) and decode as a key
// file. Failures are CorruptErrors naming the file.
func loadKeyFile(ctx context.Context, be backend.Backend, h backend.Handle) (*KeyFile, error) {
	buf, err := backend.LoadAll(ctx, be, h)
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	if id, err := ParseID(h.Name); err == nil && Hash(buf) != id {
		return nil, corrupt(h.String(), "content hash %s does not match its name", Hash(buf).Str())
	}
	kf, err := ParseKeyFile(buf)
	if err != nil {
		return nil, corrupt(h.String(), "%w", err)
	}
	return kf, nil
}

// searchKey tries key files until one opens with password. It returns the
// damaged key files it passed over. When none opens, the error is
// ErrWrongPassword if every key file is intact, and a DamagedKeyError
// naming the damaged ones otherwise: a damaged file may hold the key of
// this very password, so calling the password wrong would send the
// operator after the wrong thing.
func searchKey(ctx context.Context, be backend.Backend, password string) (*crypto.Key, ID, []SkippedFile, error) {
	var names []string
	err := be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, ID{}, nil, fmt.Errorf("list keys: %w", err)
	}
	if len(names) == 0 {
		return nil, ID{}, nil, fmt.Errorf("%s has no key files: %w", be.Location(), ErrWrongPassword)
	}
	var damaged []SkippedFile
	tried := 0
	for i, name := range names {
		if i >= maxKeysTried {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, ID{}, nil, err
		}
		h := backend.Handle{Type: backend.KeyFile, Name: name}
		kf, err := loadKeyFile(ctx, be, h)
		if err != nil {
			switch {
			case skippable(ctx, err):
				damaged = append(damaged, SkippedFile{Handle: h, Err: err})
				continue
			case errors.Is(err, backend.ErrNotExist) && ctx.Err() == nil:
				continue // removed since the listing
			}
			return nil, ID{}, nil, err
		}
		tried++
		master, err := kf.openMaster(password)
		if err != nil {
			if !errors.Is(err, crypto.ErrUnauthenticated) {
				// The password opens it, but what it holds is no key.
				damaged = append(damaged, SkippedFile{Handle: h, Err: corrupt(h.String(), "%w", err)})
				tried--
			}
			continue
		}
		id, err := ParseID(name)
		if err != nil {
			return nil, ID{}, nil, err
		}
		return master, id, damaged, nil
	}
	if len(damaged) > 0 {
		return nil, ID{}, nil, &DamagedKeyError{Damaged: damaged, Tried: tried}
	}
	return nil, ID{}, nil, ErrWrongPassword
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

// KDFParams are scrypt's cost parameters for a new key file: N (a power
// of two), R and P, as the key file records them.
type KDFParams struct {
	N, R, P int
}

// params are p's scrypt parameters, or, for nil, parameters calibrated on
// this machine (as restic calibrates them: about half a second).
func (p *KDFParams) params() crypto.Params {
	if p == nil {
		return crypto.Calibrate(kdfTarget, kdfMemory)
	}
	return crypto.Params{N: p.N, R: p.R, P: p.P}
}

// AddKey adds a key file for password, calibrating scrypt (or using kdf if
// non-nil), and returns its ID.
func (r *Repository) AddKey(ctx context.Context, password string, kdf *KDFParams, username, hostname string) (ID, error) {
	if password == "" {
		return ID{}, errors.New("add key: empty password")
	}
	return r.addKey(ctx, password, kdf.params(), username, hostname)
}

// KeyInfo describes one key file for listing.
type KeyInfo struct {
	ID      ID
	Current bool
	// File is the key file's metadata; nil when it is damaged.
	File *KeyFile
	// Damaged says why the file cannot be used (nil for intact files).
	Damaged error
}

// ListKeys loads every key file's metadata (without opening them). A
// damaged key file is listed with Damaged set instead of failing the list.
func (r *Repository) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	err := r.be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		id, err := ParseID(fi.Name)
		if err != nil {
			return err
		}
		h := backend.Handle{Type: backend.KeyFile, Name: fi.Name}
		kf, err := loadKeyFile(ctx, r.be, h)
		switch {
		case err == nil:
			out = append(out, KeyInfo{ID: id, Current: id == r.keyID, File: kf})
		case skippable(ctx, err):
			out = append(out, KeyInfo{ID: id, Current: id == r.keyID, Damaged: err})
		case errors.Is(err, backend.ErrNotExist) && ctx.Err() == nil:
		default:
			return err
		}
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
