package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/outposthq/outpost/internal/ctxio"
	"github.com/outposthq/outpost/internal/signature"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Signed artifacts at the gateway. The control plane may verify a
// rollout's signature too, but a gateway trusts only its own keys
// (Config.TrustedKeys): before the first byte of a release goes to a
// node, the artifact in the gateway's cache is verified against the
// bundle the assignment carries. A refused deployment fails at the upload
// step with the node untouched (never dialled), so a control plane that
// was broken into cannot push unsigned code into this gateway's segment.

// maxVerified bounds the cache of verified signatures.
const maxVerified = 256

// verifiedKey is one artifact file version checked with one bundle.
type verifiedKey struct {
	path    string
	sha256  string
	size    int64
	modTime time.Time
	bundle  [sha256.Size]byte
}

// signatureChecks remembers successful verifications, so that an
// artifact deployed to thousands of nodes is hashed once.
type signatureChecks struct {
	mu     sync.Mutex
	signer map[verifiedKey]string // guarded by mu
}

// errSignature marks a deployment refused for its artifact's signature.
var errSignature = errors.New("artifact signature refused by the gateway")

// checkSignature verifies the artifact at path against a's signature
// with the gateway's trusted keys. It returns the signer ("" when the
// gateway trusts no key and requires none).
func (g *Gateway) checkSignature(ctx context.Context, a *outpostv1.Assignment, path string) (string, error) {
	trust := g.cfg.TrustedKeys
	art := a.GetRelease().GetArtifact()
	bundle := art.GetSignature().GetBundle()
	switch {
	case trust.Empty():
		return "", nil
	case len(bundle) == 0 && !g.cfg.RequireSignature:
		return "", nil
	case len(bundle) == 0:
		return "", fmt.Errorf("%w: gateway %s requires a signed artifact and sha256:%s has no signature: %w", errSignature, g.cfg.Name, art.GetSha256(), trust.Required())
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("artifact: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("artifact: %w", err)
	}
	key := verifiedKey{path: path, sha256: art.GetSha256(), size: st.Size(), modTime: st.ModTime(), bundle: sha256.Sum256(bundle)}
	c := &g.sigs
	c.mu.Lock()
	signer, ok := c.signer[key]
	c.mu.Unlock()
	if ok {
		return signer, nil
	}
	signer, err = trust.Verify(bundle, ctxio.Reader(ctx, f))
	var se *signature.Error
	switch {
	case errors.As(err, &se):
		return "", fmt.Errorf("%w: gateway %s: %w", errSignature, g.cfg.Name, err)
	case err != nil:
		return "", fmt.Errorf("artifact: %w", err)
	}
	c.mu.Lock()
	if c.signer == nil || len(c.signer) >= maxVerified {
		c.signer = make(map[verifiedKey]string)
	}
	c.signer[key] = signer
	c.mu.Unlock()
	return signer, nil
}
