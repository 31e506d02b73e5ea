package cli

import (
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestNodeList(t *testing.T) {
	f := startFake(t)
	for _, n := range []*outpostv1.Node{
		{Id: "node-03", Address: "10.0.0.3:22", Datacenter: "dc-1", Labels: map[string]string{"app": "other"}},
		{Id: "node-01", Address: "10.0.0.1:22", Datacenter: "dc-1", Labels: map[string]string{"tier": "1", "app": "demo"}},
		{Id: "node-02", Address: "10.0.0.2:2222", Datacenter: "dc-2", Labels: map[string]string{"app": "demo"}},
	} {
		f.nodes[n.GetId()] = n
	}
	tests := []struct {
		args []string
		want string
	}{
		// Three nodes with the fake's two-item pages: the verb must follow the token.
		{[]string{"node", "list"}, `ID       ADDRESS        DATACENTER  LABELS
node-01  10.0.0.1:22    dc-1        app=demo,tier=1
node-02  10.0.0.2:2222  dc-2        app=demo
node-03  10.0.0.3:22    dc-1        app=other
`},
		{[]string{"node", "list", "-l", "app=demo", "--datacenter", "dc-2"}, `ID       ADDRESS        DATACENTER  LABELS
node-02  10.0.0.2:2222  dc-2        app=demo
`},
		{[]string{"node", "list", "-l", "app=demo", "-o", "yaml"}, `nodes:
- address: 10.0.0.1:22
  datacenter: dc-1
  id: node-01
  labels:
    app: demo
    tier: "1"
- address: 10.0.0.2:2222
  datacenter: dc-2
  id: node-02
  labels:
    app: demo
`},
		{[]string{"node", "list", "--datacenter", "dc-2", "-o", "json"}, `{
  "nodes": [
    {
      "id": "node-02",
      "address": "10.0.0.2:2222",
      "datacenter": "dc-2",
      "labels": {
        "app": "demo"
      }
    }
  ]
}
`},
	}
	for _, tt := range tests {
		code, out, errOut := f.run(t, tt.args...)
		if code != 0 || out != tt.want {
			t.Errorf("outpost %q: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", tt.args, code, errOut, out, tt.want)
		}
	}
}

func TestNodeListUsage(t *testing.T) {
	f := startFake(t)
	for _, args := range [][]string{
		{"node", "list", "extra"},
		{"node", "list", "-o", "xml"},
		{"node", "list", "-l", "app"},
	} {
		code, _, errOut := f.run(t, args...)
		if code != 2 {
			t.Errorf("outpost %q: exit %d (stderr %q), want 2", args, code, errOut)
		}
	}
}

func TestNodeListEmpty(t *testing.T) {
	f := startFake(t)
	code, out, errOut := f.run(t, "node", "list")
	if code != 0 || out != "" || !strings.Contains(errOut, "no nodes") {
		t.Errorf("empty inventory: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
