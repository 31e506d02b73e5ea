// Package artifact is the control plane's content-addressed artifact store
// on local disk. Gateways fetch each artifact from it once by digest.
//
// Layout under the store's directory:
//
//	tmp/                  uploads in progress (removed on failure; stale ones at Open)
//	sha256/<hex>          the artifact, read-only, named by its SHA-256
//	sha256/<hex>.json     its Meta (the uploaded file name)
//
// Invariants: a file under sha256/ always has the digest its name says and
// was fsynced before it appeared there (uploads are hashed while streamed to
// tmp/, verified, then linked into place); a digest reaches a path only
// after CheckDigest accepted it. Artifacts never go into etcd.
package artifact
