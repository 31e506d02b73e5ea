package plan

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"golang.org/x/crypto/ssh"
)

// ParseInventory reads a node inventory:
//
//	nodes:
//	  - {id: srv-0001, address: 10.0.0.1, datacenter: seoul-1, user: deploy,
//	     labels: {app: billing-api, tier: "1"}, host_keys: ["ssh-ed25519 AAAA..."]}
//
// Addresses get port 22 when they have none. Every node is checked with
// CheckNodes; errors name the entry ("nodes[3].address").
func ParseInventory(data []byte) ([]*outpostv1.Node, error) {
	obj, err := decodeYAML("inventory", data)
	if err != nil {
		return nil, err
	}
	p := problems{doc: "inventory"}
	for _, k := range sortedKeys(obj) {
		if k != "nodes" {
			p.errs = append(p.errs, &FieldError{Field: "inventory", Err: fmt.Errorf("unknown field %q (an inventory has only \"nodes\")", k), key: k})
		}
	}
	list, ok := obj["nodes"].([]any)
	switch {
	case obj["nodes"] == nil:
		p.add("nodes", "required: the list of nodes")
	case !ok:
		p.add("nodes", "must be a list, not %s", kindOf(obj["nodes"]))
	}
	md := (&outpostv1.Node{}).ProtoReflect().Descriptor()
	nodes := make([]*outpostv1.Node, 0, len(list))
	for i, item := range list {
		f := index("nodes", i)
		m, ok := item.(map[string]any)
		if !ok {
			p.add(f, "must be a mapping of keys to values, not %s", kindOf(item))
			continue
		}
		var np problems
		norm := normalize(md, m, f, &np)
		if len(np.errs) > 0 {
			p.errs = append(p.errs, np.errs...)
			continue
		}
		n := &outpostv1.Node{}
		if err := unmarshalNormalized(f, norm, n); err != nil {
			p.addErr(err)
			continue
		}
		if a, err := NormalizeAddress(n.GetAddress()); err == nil {
			n.Address = a
		}
		nodes = append(nodes, n)
	}
	if err := p.err(); err != nil {
		addLines(err, data)
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, &FieldError{Field: "nodes", Err: fmt.Errorf("no nodes listed")}
	}
	if err := CheckNodes(nodes); err != nil {
		addLines(err, data)
		return nil, err
	}
	return nodes, nil
}

var (
	userRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}$`)
	hostnameRE = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$`)
)

// NormalizeAddress checks a node address (host, host:port, an IPv6 address
// with or without [brackets], [v6]:port) and returns it as host:port with
// port 22 when none was given.
func NormalizeAddress(addr string) (string, error) {
	if addr == "" {
		return "", fmt.Errorf("required")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: a host name, an IPv4 address, or a bare or bracketed IPv6 address.
		host, port = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), "22"
		if strings.Contains(host, ":") && net.ParseIP(host) == nil {
			return "", fmt.Errorf("%q: not host or host:port", addr)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", fmt.Errorf("%q: port must be from 1 to 65535", addr)
	}
	if net.ParseIP(host) == nil && (len(host) > 253 || !hostnameRE.MatchString(host)) {
		return "", fmt.Errorf("%q: %q is not an IP address or host name", addr, host)
	}
	return net.JoinHostPort(host, port), nil
}

// CheckNodes validates nodes (from an inventory or ApplyNodes): ids unique
// and valid, addresses valid and unique, datacenter given, user, labels and
// pinned host keys well-formed. It reports every problem, each naming the
// entry ("nodes[3].id"); duplicates name both entries.
func CheckNodes(nodes []*outpostv1.Node) error {
	p := problems{doc: "inventory"}
	ids := map[string]int{}
	addrs := map[string]int{}
	for i, n := range nodes {
		f := index("nodes", i)
		if n == nil {
			p.add(f, "empty node")
			continue
		}
		if err := checkName(join(f, "id"), n.GetId()); err != nil {
			p.addErr(err)
		} else if j, dup := ids[n.GetId()]; dup {
			p.add(join(f, "id"), "%q: duplicates nodes[%d] (node ids are unique)", n.GetId(), j)
		} else {
			ids[n.GetId()] = i
		}
		if a, err := NormalizeAddress(n.GetAddress()); err != nil {
			p.errs = append(p.errs, &FieldError{Field: join(f, "address"), Err: err})
		} else if j, dup := addrs[a]; dup {
			p.add(join(f, "address"), "%q: same server as nodes[%d] (%s)", n.GetAddress(), j, nodes[j].GetId())
		} else {
			addrs[a] = i
		}
		if n.GetDatacenter() == "" {
			p.add(join(f, "datacenter"), "required")
		} else {
			p.addErr(checkName(join(f, "datacenter"), n.GetDatacenter()))
		}
		if u := n.GetUser(); u != "" && !userRE.MatchString(u) {
			p.add(join(f, "user"), "%q: not a valid user name", u)
		}
		checkLabels(join(f, "labels"), n.GetLabels(), &p)
		for j, k := range n.GetHostKeys() {
			if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
				p.add(index(join(f, "host_keys"), j), "not an SSH public key in authorized_keys format (\"ssh-ed25519 AAAA...\"): %v", err)
			} else if len(strings.TrimSpace(string(rest))) > 0 {
				p.add(index(join(f, "host_keys"), j), "one key per entry")
			}
		}
	}
	return p.err()
}
