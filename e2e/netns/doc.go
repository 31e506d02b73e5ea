// Package netns tests Outpost across a segmented network, the way it is
// deployed in regulated companies: the control plane in a central
// segment, and datacenter (IDC) segments that allow outbound connections
// only.
//
// The test builds that network from Linux network namespaces it creates
// and owns: a "central" namespace (the control plane and its embedded
// etcd), two "idc" namespaces (a gateway and real OpenSSH sshd nodes
// each), and a "router" namespace between them whose nftables firewall
// forwards new connections from the idc namespaces to central and
// nothing else. It runs the real outpost binary in the namespaces,
// deploys a release across both idc segments, and proves that nothing in
// central can open a connection into either of them.
//
// Nothing touches the host's interfaces, routes or firewall: every link
// is created inside the test's namespaces (named outpost-e2e-<pid>-*),
// and deleting the namespaces removes it all. A crashed run's leftovers
// are removed by the next run.
//
// The test needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), the ip command
// (iproute2), nft (nftables) and /usr/sbin/sshd; `make test` installs the
// packages. It skips when it cannot create network namespaces.
//
// The package has no code outside its tests.
package netns
