package auth

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/keyfile"
)

// The key-encryption key (KEK) seals the CA's private key before it goes
// into etcd, so that whoever reads etcd — a snapshot, a backup, a member's
// disk — cannot sign credentials. The KEK lives only in a file that every
// replica has and etcd never sees.
const (
	// kekSize is the KEK's length: AES-256.
	kekSize = 32
	// maxKEKFile bounds what is read from a KEK file: 44 base64
	// characters and a line end are expected.
	maxKEKFile = 1 << 10
	// sealedKeyType is the PEM block type of a sealed CA key. Its bytes
	// are the GCM nonce followed by the sealed PKCS #8 PEM key.
	sealedKeyType = "OUTPOST SEALED CA KEY"
	// sealAlgorithm is the sealed block's Algorithm header; another value
	// is refused, so the format can change without being misread.
	sealAlgorithm = "AES-256-GCM"
)

// errNoKEK says the KEK file does not exist.
var errNoKEK = errors.New("no key-encryption key file")

// kek is a loaded key-encryption key.
type kek struct {
	aead cipher.AEAD
	path string // where it was read, for errors
}

// loadKEK reads the KEK from path: 32 bytes in base64 on one line, in a
// private file (internal/keyfile). A missing file is errNoKEK.
func loadKEK(path string) (*kek, error) {
	data, err := keyfile.ReadPrivate(path, maxKEKFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", errNoKEK, path)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: key-encryption key: %w", err)
	}
	// The error never quotes the file: it may be a key with a typo.
	key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil || len(key) != kekSize || bytes.Equal(key, make([]byte, kekSize)) {
		return nil, fmt.Errorf("auth: key-encryption key %s: want %d random bytes in base64 on one line (openssl rand -base64 %d)", path, kekSize, kekSize)
	}
	return newKEK(key, path)
}

func newKEK(key []byte, path string) (*kek, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("auth: key-encryption key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("auth: key-encryption key: %w", err)
	}
	return &kek{aead: aead, path: path}, nil
}

// loadOrCreateKEK loads the KEK at path, or makes a new random one there
// (0600) when there is none. Replicas that share the path and start at
// once end up with the same key: the file appears whole, by link, and
// only once.
func loadOrCreateKEK(path string) (*kek, error) {
	k, err := loadKEK(path)
	if !errors.Is(err, errNoKEK) {
		return k, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: key-encryption key: %w", err)
	}
	key := make([]byte, kekSize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("auth: key-encryption key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".kek-*") // 0600
	if err != nil {
		return nil, fmt.Errorf("auth: key-encryption key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("auth: write key-encryption key: %w", err)
	}
	switch err := os.Link(tmp.Name(), path); {
	case errors.Is(err, fs.ErrExist):
		return loadKEK(path) // another replica made it first
	case err != nil:
		return nil, fmt.Errorf("auth: key-encryption key: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("auth: key-encryption key: %w", err)
	}
	return newKEK(key, path)
}

// syncDir makes a new name in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sealAD is the additional data of a sealed CA key: it binds the sealed
// key to its etcd key and to its certificate, so it opens nowhere else.
func sealAD(certDER []byte) []byte {
	h := sha256.Sum256(certDER)
	return append([]byte("outpost sealed CA key v1\x00"+store.CAKey+"\x00"), h[:]...)
}

// seal returns keyPEM sealed for certDER's CA, as a PEM block.
func (k *kek) seal(certDER, keyPEM []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("auth: seal CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{
		Type:    sealedKeyType,
		Headers: map[string]string{"Algorithm": sealAlgorithm},
		Bytes:   k.aead.Seal(nonce, nonce, keyPEM, sealAD(certDER)),
	}), nil
}

// open returns the PEM key in a sealed block of certDER's CA.
func (k *kek) open(certDER []byte, blk *pem.Block) ([]byte, error) {
	if alg := blk.Headers["Algorithm"]; alg != sealAlgorithm {
		return nil, fmt.Errorf("auth: the CA key in etcd at %s is sealed with %q, this version opens only %s", store.CAKey, alg, sealAlgorithm)
	}
	n := k.aead.NonceSize()
	if len(blk.Bytes) < n+k.aead.Overhead() {
		return nil, fmt.Errorf("auth: the sealed CA key in etcd at %s is truncated", store.CAKey)
	}
	keyPEM, err := k.aead.Open(nil, blk.Bytes[:n], blk.Bytes[n:], sealAD(certDER))
	if err != nil {
		return nil, fmt.Errorf("auth: the key-encryption key in %s does not open the CA key in etcd at %s: every replica needs the KEK file of the replica that created the CA (or the value in etcd was altered)", k.path, store.CAKey)
	}
	return keyPEM, nil
}
