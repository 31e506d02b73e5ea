package controlplane

import (
	"context"
	"errors"

	"github.com/outposthq/outpost/internal/ctxio"
	"github.com/outposthq/outpost/internal/signature"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Signed artifacts. An environment that trusts keys (trusted_keys in the
// control plane's configuration) has every signature given for it
// verified when a rollout is created or undone, and one that sets
// require_signature refuses an unsigned artifact; the verified signer is
// recorded in the rollout's artifact. An environment that trusts no key
// (and a control plane without environments) keeps a well-formed bundle
// unverified, for the gateways, which verify it again in any case with
// their own --trusted-keys before anything reaches a node. A rollout's
// artifact and signature never change after creation, so an approval
// approves exactly the digest and signer the rollout shows.

// checkSignature verifies art's signature for spec's environment and sets
// its signer, or refuses it with INVALID_ARGUMENT on artifact_signature
// naming the keys the environment trusts. It reads the artifact from the
// store.
func (s *Server) checkSignature(ctx context.Context, spec *outpostv1.PlanSpec, art *outpostv1.Artifact) error {
	sig := art.GetSignature()
	bundle := sig.GetBundle()
	if sig != nil {
		sig.Signer = ""
	}
	env := s.envs[spec.GetEnvironment()]
	var trust *signature.Trust
	if env != nil {
		trust = env.trust
	}
	if trust.Empty() {
		if len(bundle) == 0 {
			return nil
		}
		// Nobody here can check it, but a bundle no gateway could read
		// is refused now rather than on every node.
		if err := signature.CheckBundle(bundle); err != nil {
			return fieldError("artifact_signature", "%v", err)
		}
		return nil
	}
	if len(bundle) == 0 {
		if !env.RequireSignature {
			return nil
		}
		return fieldError("artifact_signature", "environment %q requires a signed artifact: %v", spec.GetEnvironment(), trust.Required())
	}
	f, _, err := s.artifacts.Open(art.GetSha256())
	if err != nil {
		return internal(err)
	}
	defer f.Close()
	signer, err := trust.Verify(bundle, ctxio.Reader(ctx, f))
	var se *signature.Error
	switch {
	case errors.As(err, &se):
		return fieldError("artifact_signature", "environment %q refuses the signature of sha256:%s: %v", spec.GetEnvironment(), art.GetSha256(), err)
	case err != nil:
		return internal(err)
	}
	sig.Signer = signer
	return nil
}
