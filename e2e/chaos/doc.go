// Package chaos tests that Outpost survives the faults of issue 6 — a
// leader killed or frozen mid-rollout, a gateway killed mid-upload, a TCP
// connection cut mid-transfer, a disk too full — with every node on exactly
// one complete release and every rollout in a truthful state.
//
// The tests run what operators run: three etcd members as separate
// processes (built from the etcd server in go.mod by
// e2e/chaos/internal/etcdmember), the real outpost binary as control plane
// replicas and gateways (so they can be killed with SIGKILL or frozen with
// SIGSTOP), and real OpenSSH sshd nodes behind a fault-injecting TCP proxy
// (internal/testproxy), each with its own loopback IP, SFTP home and
// health endpoint. After each fault they check the nodes' files (current
// link, release directories, lock, history), the rollout and its node
// records, and the audit log.
//
// `make chaos` runs the package alone; `make test` runs it with everything
// else. The package has no code outside its tests and the etcdmember
// helper.
package chaos
