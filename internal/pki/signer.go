package pki

import "crypto"

// Signer returns the CA's private key as a signer, for statements the
// control plane signs besides certificates (the audit log's checkpoints,
// see internal/auditchain). The key stays in memory: it is never
// written anywhere but the CA's own files and its KEK-sealed copy.
func (ca *CA) Signer() crypto.Signer { return ca.key }
