// Package controlplane is the Outpost control plane daemon: the gRPC API
// for people and tools (ControlPlaneService), for artifact uploads
// (ArtifactService) and for gateways (GatewayService), plus the leader loop
// that runs the rollout engine.
//
// Start opens the state store (an embedded etcd in DataDir/etcd, or an
// external cluster), the artifact store (Config.ArtifactDir, by default
// DataDir/artifacts), serves gRPC with server reflection and the standard
// health service, serves Prometheus metrics, and campaigns for
// leadership. Any replica serves reads, creates rollouts and stores
// artifacts; only the leader runs the rollout engine (package
// controlplane/rollout), accepts gateway streams and aborts rollouts,
// because it alone owns rollout state. A follower answers those calls with
// UNAVAILABLE so the caller retries, normally against the leader; gateways
// are given every replica's address and move on to the next one.
//
// Security: every connection is TLS 1.3 with the installation's CA, kept
// in etcd so every replica shares it (package controlplane/auth), and the
// first start writes an admin credential to DataDir/admin.pem. Each call
// passes the audit interceptor (package controlplane/audit), then the auth
// interceptor (who may call what) inside it: a refused call reaches no
// handler, and the audit interceptor, which records a mutating call with
// its outcome once the calls inside it returned, records the refusal too
// (PERMISSION_DENIED, with the caller named from its certificate).
// AdminService issues join tokens and credentials. A gateway's hello must match its certificate, so it is
// only ever given nodes of its own datacenter. Declared environments
// (Config.Environments) are enforced before CreateRollout: a plan must name
// one, and its hooks must be on the environment's allow-list. Host keys
// are pinned from a scan a gateway of the node's datacenter made
// (ScanNodeHostKey, TrustNodeHostKey): the control plane never connects to
// a node and never holds SSH credentials.
//
// High availability: replicas share an external etcd cluster and one
// artifact directory (a shared volume), since an artifact uploaded through
// one replica is fetched by gateways from any. A dead leader's lease
// expires within Config.LeaderTTL (default 10 s) and another replica takes
// over, loading every unfinished rollout from etcd; nodes a gateway was
// deploying wait Config.GatewayGrace (default 30 s) for it to come back
// before they go, with leave to take over its lock, to another gateway of
// the datacenter.
//
// Leader loop (the model is Nomad's leader.go): campaign; on winning,
// start an engine fenced with the leadership; when leadership ends (lease
// lost, fenced write refused, Shutdown), stop the engine, which ends every
// gateway stream so gateways reconnect to the next leader; campaign again.
package controlplane
