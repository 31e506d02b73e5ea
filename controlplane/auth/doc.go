// Package auth decides who may call the control plane, and issues the
// credentials that say so.
//
// Every gRPC call passes [Authority.UnaryInterceptor] or
// [Authority.StreamInterceptor]. The caller's identity comes from the client
// certificate verified by TLS (see internal/pki): a user with a role, or a
// gateway with a datacenter. The interceptor refuses the call with
// UNAUTHENTICATED when there is no valid credential (none, not an Outpost
// identity, expired, revoked) and with PERMISSION_DENIED when the identity
// may not make it; otherwise the identity is in the handler's context
// ([FromContext]).
//
// What each call requires is in one table, [Required], keyed by full method
// name. A method missing from the table is denied, so a new RPC is closed
// until someone decides who may call it.
//
// Roles (only viewer is contained in the others, so deploying and approving
// are separate duties and a rollout needs a second person to approve):
//
//	viewer    get, list and watch nodes, rollouts, revisions, artifacts
//	deployer  viewer + create, pause, resume, abort, promote, retry rollouts;
//	          upload artifacts
//	approver  viewer + approve, reject, validate rollouts
//	admin     deployer + approver + node inventory (ApplyNodes pins host
//	          keys, DeleteNode), join tokens, users, revocation
//
// Gateways may call only GatewayService, and only with a gateway
// certificate; JoinGateway (and the gRPC health check) need no credential.
//
// Gateways get their certificate by redeeming a single-use join token
// ([TokenStore]); tokens are stored as SHA-256 hashes and redeemed in an
// etcd transaction compared on the token's mod revision, so two gateways
// racing with one token cannot both win. Revocations are etcd keys watched
// by every replica; a revoked certificate is refused on the next call and
// streams opened with it end.
//
// etcd layout (values are protobuf; each key carries a lease that ends a
// while after the object stops mattering, so etcd does the garbage
// collection):
//
//	/outpost/jointokens/<hex SHA-256 of the secret>  outpost.v1.JoinToken
//	/outpost/credentials/<serial>                    outpost.v1.Credential
//	/outpost/revoked/<serial>                        outpost.v1.Credential
//	/outpost/ca           google.protobuf.BytesValue (CA certificate, PEM, and its key
//	                      sealed with the key-encryption key; no lease)
//
// The CA is shared through etcd so every replica issues and accepts the
// same certificates ([LoadOrCreateCA]). Its private key is in etcd only
// sealed (AES-256-GCM) with a key-encryption key kept in a file outside
// etcd, which every replica shares: reading etcd, or a backup of it, is
// not enough to sign credentials.
//
// Secrets — join tokens and private keys — never reach logs or errors. The
// control plane never sees a client's private key: clients send CSRs.
package auth
