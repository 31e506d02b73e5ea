// Package signature decides whether an artifact was signed by a trusted
// key. A signature is a Sigstore bundle (v0.3 JSON), the file
// `cosign sign-blob --key cosign.key --bundle app.bundle
// --new-bundle-format --tlog-upload=false` writes; it is verified offline
// with sigstore-go against named public keys (ECDSA P-256 over SHA-256,
// or Ed25519 as Ed25519ph over SHA-512, as Sigstore's signers make it),
// never against a transparency log or a certificate authority, so
// verification needs no network.
//
// Both the control plane (for an environment that trusts keys) and every
// gateway (with its own --trusted-keys) verify with [Trust.Verify], so a
// compromised control plane cannot make a gateway deploy what its own
// keys did not sign.
//
// Invariants:
//   - a bundle is at most [MaxBundleBytes] and parsed strictly: unknown
//     fields, another media type, a certificate instead of a public key,
//     or a DSSE envelope instead of a message signature are refused;
//   - the artifact's bytes are hashed here, so a bundle for other bytes
//     never verifies, whatever digest it claims;
//   - the signer is the id of the one trusted key whose signature
//     verifies; the bundle's key hint is not trusted to pick it.
package signature
