package plan

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/testing/protocmp"
)

const hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILbSZEygnHLbWG8Int5H+KpoSPJSkmXfd9XvsrlQZe8Z"

func TestParseInventory(t *testing.T) {
	src := `nodes:
  - id: srv-0001
    address: 10.0.0.1
    datacenter: seoul-1
    user: deploy
    labels: {app: web, tier: 1, canary: true}
    host_keys: ["` + hostKey + `"]
  - {id: srv-0002, address: "10.0.0.2:2222", datacenter: seoul-1}
  - {id: srv-0003, address: "fd00::3", datacenter: busan-1}
  - {id: srv-0004, address: "[fd00::4]", datacenter: busan-1}
  - {id: srv-0005, address: node5.example.internal, datacenter: busan-1, hostKeys: []}
`
	got, err := ParseInventory([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []*outpostv1.Node{
		{Id: "srv-0001", Address: "10.0.0.1:22", Datacenter: "seoul-1", User: "deploy",
			Labels: map[string]string{"app": "web", "tier": "1", "canary": "true"}, HostKeys: []string{hostKey}},
		{Id: "srv-0002", Address: "10.0.0.2:2222", Datacenter: "seoul-1"},
		{Id: "srv-0003", Address: "[fd00::3]:22", Datacenter: "busan-1"},
		{Id: "srv-0004", Address: "[fd00::4]:22", Datacenter: "busan-1"},
		{Id: "srv-0005", Address: "node5.example.internal:22", Datacenter: "busan-1"},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("ParseInventory (-want +got):\n%s", diff)
	}
}

func TestParseInventoryBad(t *testing.T) {
	const ok1 = "  - {id: srv-1, address: 10.0.0.1, datacenter: dc-1}\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", "", "inventory: empty document"},
		{"no nodes key", "hosts: []\n", `inventory: unknown field "hosts" (an inventory has only "nodes") (line 1)
nodes: required: the list of nodes`},
		{"nodes not a list", "nodes: {id: a}\n", "nodes: must be a list, not a mapping (line 1)"},
		{"empty list", "nodes: []\n", "nodes: no nodes listed"},
		{"item not a mapping", "nodes:\n  - srv-1\n", "nodes[0]: must be a mapping of keys to values, not a string (line 2)"},
		{"unknown field", "nodes:\n" + ok1 + "  - {id: srv-2, adress: 10.0.0.2, datacenter: dc-1}\n", `nodes[1]: unknown field "adress" (did you mean "address"?) (line 3)`},
		{"missing id", "nodes:\n  - {address: 10.0.0.1, datacenter: dc-1}\n", "nodes[0].id: required"},
		{"bad id", "nodes:\n  - {id: Web_Server, address: 10.0.0.1, datacenter: dc-1}\n", `nodes[0].id: "Web_Server": must be 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit (line 2)`},
		{"duplicate id", "nodes:\n" + ok1 + "  - {id: srv-2, address: 10.0.0.2, datacenter: dc-1}\n  - {id: srv-1, address: 10.0.0.3, datacenter: dc-1}\n",
			`nodes[2].id: "srv-1": duplicates nodes[0] (node ids are unique) (line 4)`},
		{"duplicate address", "nodes:\n" + ok1 + "  - {id: srv-2, address: '10.0.0.1:22', datacenter: dc-1}\n",
			`nodes[1].address: "10.0.0.1:22": same server as nodes[0] (srv-1) (line 3)`},
		{"missing address", "nodes:\n  - {id: srv-1, datacenter: dc-1}\n", "nodes[0].address: required"},
		{"bad port", "nodes:\n  - {id: srv-1, address: '10.0.0.1:0', datacenter: dc-1}\n", `nodes[0].address: "10.0.0.1:0": port must be from 1 to 65535 (line 2)`},
		{"port not a number", "nodes:\n  - {id: srv-1, address: 'host:ssh', datacenter: dc-1}\n", `nodes[0].address: "host:ssh": port must be from 1 to 65535 (line 2)`},
		{"bad host", "nodes:\n  - {id: srv-1, address: 'bad host!', datacenter: dc-1}\n", `nodes[0].address: "bad host!": "bad host!" is not an IP address or host name (line 2)`},
		{"shell in host", "nodes:\n  - {id: srv-1, address: '$(reboot)', datacenter: dc-1}\n", `nodes[0].address: "$(reboot)": "$(reboot)" is not an IP address or host name (line 2)`},
		{"missing datacenter", "nodes:\n  - {id: srv-1, address: 10.0.0.1}\n", "nodes[0].datacenter: required"},
		{"bad user", "nodes:\n  - {id: srv-1, address: 10.0.0.1, datacenter: dc-1, user: 'root;id'}\n", `nodes[0].user: "root;id": not a valid user name (line 2)`},
		{"bad label", "nodes:\n  - {id: srv-1, address: 10.0.0.1, datacenter: dc-1, labels: {tier: 'a b'}}\n", `nodes[0].labels.tier: "a b": label value must be at most 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit (line 2)`},
		{"bad host key", "nodes:\n  - {id: srv-1, address: 10.0.0.1, datacenter: dc-1, host_keys: [not-a-key]}\n", `nodes[0].host_keys[0]: not an SSH public key in authorized_keys format ("ssh-ed25519 AAAA..."): ssh: no key found (line 2)`},
		{"two host keys in one", "nodes:\n  - {id: srv-1, address: 10.0.0.1, datacenter: dc-1, host_keys: [\"" + hostKey + "\\n" + hostKey + "\"]}\n", `nodes[0].host_keys[0]: one key per entry (line 2)`},
		{"host keys not a list", "nodes:\n  - {id: srv-1, address: 10.0.0.1, datacenter: dc-1, host_keys: '" + hostKey + "'}\n", `nodes[0].host_keys: must be a list, not a string (write [` + hostKey + `]) (line 2)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes, err := ParseInventory([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("ParseInventory(%q) = %v, want error %q", tt.yaml, nodes, tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("ParseInventory(%q) error:\n got: %s\nwant: %s", tt.yaml, got, tt.want)
			}
		})
	}
}

func TestNormalizeAddress(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"10.0.0.1", "10.0.0.1:22", false},
		{"10.0.0.1:2222", "10.0.0.1:2222", false},
		{"host.example", "host.example:22", false},
		{"host.example.", "host.example.:22", false},
		{"::1", "[::1]:22", false},
		{"[::1]", "[::1]:22", false},
		{"[::1]:2200", "[::1]:2200", false},
		{"127.31.2.3:10022", "127.31.2.3:10022", false},
		{"", "", true},
		{"host:", "", true},
		{"host:65536", "", true},
		{"host:022", "", true},
		{"-oProxyCommand=x", "", true},
		{"a..b", "", true},
		{"fd00::zz", "", true},
	}
	for _, tt := range tests {
		got, err := NormalizeAddress(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("NormalizeAddress(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
