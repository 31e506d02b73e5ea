package auth

import (
	"bytes"
	"context"
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

// CAKey is where the CA every replica shares is kept: the certificate and
// its private key in PEM, as a google.protobuf.BytesValue. Whoever can
// read etcd can already rewrite every rollout; protect etcd accordingly
// (client TLS and auth on an external cluster).
const CAKey = store.Root + "ca"

// LoadOrCreateCA returns the installation's CA, the same on every control
// plane replica: the one in etcd when there is one (copied into dir, so
// the files show which CA is in use), else the one in dir (created there
// if dir has none), published to etcd for the other replicas. When two
// replicas start at once, one CA wins and the other replica adopts it.
//
// A replica whose dir holds a CA different from etcd's refuses to start:
// its credentials would not work anywhere else.
func LoadOrCreateCA(ctx context.Context, st *store.Store, dir string) (*pki.CA, error) {
	shared, err := getSharedCA(ctx, st)
	if err != nil {
		return nil, err
	}
	if shared != nil {
		return adoptCA(dir, shared)
	}
	_, statErr := os.Stat(filepath.Join(dir, pki.CACertFile))
	createdHere := errors.Is(statErr, fs.ErrNotExist)
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		return nil, err
	}
	pemBundle, err := caBundle(ca)
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(wrapperspb.Bytes(pemBundle))
	if err != nil {
		return nil, fmt.Errorf("auth: encode CA: %w", err)
	}
	absent := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(CAKey), "=", 0)}
	switch err := st.TxnIf(ctx, nil, absent, clientv3.OpPut(CAKey, string(b))); {
	case err == nil:
		return ca, nil
	case errors.Is(err, store.ErrConflict):
		// Another replica published first: use its CA. Ours, made a
		// moment ago, has signed nothing yet.
		if shared, err = getSharedCA(ctx, st); err != nil {
			return nil, err
		}
		if shared == nil {
			return nil, errors.New("auth: the shared CA vanished while publishing ours")
		}
		if createdHere {
			for _, f := range []string{pki.CACertFile, pki.CAKeyFile} {
				if err := os.Remove(filepath.Join(dir, f)); err != nil {
					return nil, fmt.Errorf("auth: discard our new CA: %w", err)
				}
			}
		}
		return adoptCA(dir, shared)
	default:
		return nil, fmt.Errorf("auth: publish CA: %w", err)
	}
}

// getSharedCA returns the PEM bundle stored in etcd, or nil.
func getSharedCA(ctx context.Context, st *store.Store) ([]byte, error) {
	v := new(wrapperspb.BytesValue)
	found, _, err := st.Get(ctx, CAKey, v)
	if err != nil {
		return nil, fmt.Errorf("auth: read shared CA: %w", err)
	}
	if !found {
		return nil, nil
	}
	return v.GetValue(), nil
}

// caBundle returns the CA certificate followed by its key, in PEM.
func caBundle(ca *pki.CA) ([]byte, error) {
	key, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	return append(ca.CertPEM(), key...), nil
}

// adoptCA makes dir hold the shared CA and returns it. If dir already has
// a CA it must be the same one.
func adoptCA(dir string, bundle []byte) (*pki.CA, error) {
	ca, err := pki.ParseCA(bundle, bundle)
	if err != nil {
		return nil, fmt.Errorf("auth: shared CA in etcd: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile)
	local, err := os.ReadFile(certPath)
	switch {
	case err == nil:
		if !bytes.Equal(local, ca.CertPEM()) {
			return nil, fmt.Errorf("auth: %s holds a CA other than the one the other control plane replicas share (in etcd at %s); credentials issued with it work nowhere else. Remove %s and %s to adopt the shared CA", dir, CAKey, certPath, keyPath)
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
