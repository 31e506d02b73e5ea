package auth

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/pki"
)

// caAttempts bounds LoadOrCreateCA's read-and-write rounds: each one that
// does not finish lost a race to another replica, which settles the value.
const caAttempts = 3

// LoadOrCreateCA returns the installation's CA, the same on every control
// plane replica: the one in etcd when there is one (copied into dir, so
// the files show which CA is in use), else the one in dir (created there
// if dir has none), published to etcd for the other replicas. When two
// replicas start at once, one CA wins and the other replica adopts it.
//
// The CA key in etcd is sealed with the key-encryption key in kekFile,
// which every replica must share. A replica finding a sealed key it cannot
// open (kekFile missing or another key) refuses to start; it never makes
// a new CA or a new KEK then. kekFile is created (0600) only when etcd has
// no sealed key yet: with a new CA, or to seal a key an older version
// stored in the clear.
//
// A replica whose dir holds a CA different from etcd's refuses to start:
// its credentials would not work anywhere else.
func LoadOrCreateCA(ctx context.Context, st *store.Store, dir, kekFile string) (*pki.CA, error) {
	if kekFile == "" {
		return nil, errors.New("auth: no key-encryption key file")
	}
	for range caAttempts {
		shared, err := getSharedCA(ctx, st)
		if err != nil {
			return nil, err
		}
		var ca *pki.CA
		switch {
		case shared == nil:
			ca, err = publishCA(ctx, st, dir, kekFile)
		case shared.sealed != nil:
			ca, err = openSharedCA(dir, kekFile, shared)
		default:
			ca, err = sealSharedCA(ctx, st, dir, kekFile, shared)
		}
		if !errors.Is(err, errCALost) {
			return ca, err
		}
	}
	return nil, fmt.Errorf("auth: the shared CA in etcd at %s kept changing while this replica started", store.CAKey)
}

// errCALost says another replica changed the shared CA first: read it again.
var errCALost = errors.New("another replica changed the shared CA")

// publishCA publishes the CA in dir (made now if dir has none), sealed,
// when etcd has none yet.
func publishCA(ctx context.Context, st *store.Store, dir, kekFile string) (*pki.CA, error) {
	k, err := loadOrCreateKEK(kekFile)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(filepath.Join(dir, pki.CACertFile))
	createdHere := errors.Is(statErr, fs.ErrNotExist)
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		return nil, err
	}
	b, err := sealedBundle(ca, k)
	if err != nil {
		return nil, err
	}
	absent := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(store.CAKey), "=", 0)}
	switch err := st.TxnIf(ctx, nil, absent, clientv3.OpPut(store.CAKey, string(b))); {
	case err == nil:
		return ca, nil
	case errors.Is(err, store.ErrConflict):
		// Another replica published first: use its CA. Ours, made a
		// moment ago, has signed nothing yet.
		if createdHere {
			for _, f := range []string{pki.CACertFile, pki.CAKeyFile} {
				if err := os.Remove(filepath.Join(dir, f)); err != nil {
					return nil, fmt.Errorf("auth: discard our new CA: %w", err)
				}
			}
		}
		return nil, errCALost
	default:
		return nil, fmt.Errorf("auth: publish CA: %w", err)
	}
}

// openSharedCA opens the sealed CA key in etcd and adopts the CA.
func openSharedCA(dir, kekFile string, shared *sharedCA) (*pki.CA, error) {
	k, err := loadKEK(kekFile)
	if errors.Is(err, errNoKEK) {
		return nil, fmt.Errorf("auth: the CA key in etcd at %s is sealed, and the key-encryption key file %s does not exist: copy the KEK file of the replica that created the CA there (the KEK cannot be made again; a new one would not open the key)", store.CAKey, kekFile)
	}
	if err != nil {
		return nil, err
	}
	keyPEM, err := k.open(shared.cert.Raw, shared.sealed)
	if err != nil {
		return nil, err
	}
	return adoptCA(dir, shared.certPEM, keyPEM)
}

// sealSharedCA replaces a CA key an older version stored in the clear by
// the same key sealed, and adopts the CA.
func sealSharedCA(ctx context.Context, st *store.Store, dir, kekFile string, shared *sharedCA) (*pki.CA, error) {
	ca, err := pki.ParseCA(shared.certPEM, shared.plainKey)
	if err != nil {
		return nil, fmt.Errorf("auth: shared CA in etcd: %w", err)
	}
	k, err := loadOrCreateKEK(kekFile)
	if err != nil {
		return nil, err
	}
	b, err := sealedBundle(ca, k)
	if err != nil {
		return nil, err
	}
	unchanged := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(store.CAKey), "=", shared.rev)}
	switch err := st.TxnIf(ctx, nil, unchanged, clientv3.OpPut(store.CAKey, string(b))); {
	case errors.Is(err, store.ErrConflict):
		return nil, errCALost
	case err != nil:
		return nil, fmt.Errorf("auth: seal the CA key in etcd: %w", err)
	}
	return adoptCA(dir, shared.certPEM, shared.plainKey)
}

// sharedCA is the value at store.CAKey.
type sharedCA struct {
	cert     *x509.Certificate
	certPEM  []byte
	sealed   *pem.Block // the sealed key; nil when plainKey is set
	plainKey []byte     // PEM, as older versions stored it; nil when sealed
	rev      int64      // the value's ModRevision
}

// getSharedCA returns the CA stored in etcd, or nil.
func getSharedCA(ctx context.Context, st *store.Store) (*sharedCA, error) {
	v := new(wrapperspb.BytesValue)
	found, rev, err := st.Get(ctx, store.CAKey, v)
	if err != nil {
		return nil, fmt.Errorf("auth: read shared CA: %w", err)
	}
	if !found {
		return nil, nil
	}
	shared := &sharedCA{rev: rev}
	rest := v.GetValue()
	var certs, keys int
	for {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			certs++
			shared.certPEM = pem.EncodeToMemory(blk)
			if shared.cert, err = x509.ParseCertificate(blk.Bytes); err != nil {
				return nil, fmt.Errorf("auth: shared CA in etcd at %s: %w", store.CAKey, err)
			}
		case sealedKeyType:
			keys++
			shared.sealed = blk
		case "PRIVATE KEY":
			keys++
			shared.plainKey = pem.EncodeToMemory(blk)
		default:
			return nil, fmt.Errorf("auth: shared CA in etcd at %s holds a PEM block %q", store.CAKey, blk.Type)
		}
	}
	if certs != 1 || keys != 1 || len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("auth: shared CA in etcd at %s: want one certificate and one key, found %d and %d", store.CAKey, certs, keys)
	}
	return shared, nil
}

// sealedBundle returns the value for store.CAKey of ca: its certificate
// and its key sealed with k.
func sealedBundle(ca *pki.CA, k *kek) ([]byte, error) {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	sealed, err := k.seal(ca.Certificate().Raw, keyPEM)
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(wrapperspb.Bytes(append(ca.CertPEM(), sealed...)))
	if err != nil {
		return nil, fmt.Errorf("auth: encode CA: %w", err)
	}
	return b, nil
}

// adoptCA makes dir hold the shared CA and returns it. If dir already has
// a CA it must be the same one.
func adoptCA(dir string, certPEM, keyPEM []byte) (*pki.CA, error) {
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("auth: shared CA in etcd: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile)
	local, err := os.ReadFile(certPath)
	switch {
	case err == nil:
		if !bytes.Equal(local, ca.CertPEM()) {
			return nil, fmt.Errorf("auth: %s holds a CA other than the one the other control plane replicas share (in etcd at %s); credentials issued with it work nowhere else. Remove %s and %s to adopt the shared CA", dir, store.CAKey, certPath, keyPath)
		}
		return pki.LoadOrCreateCA(dir) // checks the local key as well
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("auth: %w", err)
	}
	if _, err := os.Stat(keyPath); err == nil {
		return nil, fmt.Errorf("auth: %s holds %s without %s; remove it to adopt the shared CA", dir, pki.CAKeyFile, pki.CACertFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	// Key first, as pki does, so a crash leaves a state it reports.
	if err := writeNew(keyPath, key, 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(certPath, ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	return pki.LoadOrCreateCA(dir)
}

// writeNew creates path with data; it never replaces a file.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	return nil
}
