package plan

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestYAML11WordsKeepTheirText: YAML 1.1 reads an unquoted yes, no, on,
// off, y or n as a boolean. Where the schema wants text the word is kept
// as written (the "Norway problem": `country: no` would select "false");
// where it wants true or false it is the boolean, as before.
func TestYAML11WordsKeepTheirText(t *testing.T) {
	spec, err := Parse([]byte(base + `targets:
  selector: {country: no, canary: Yes, tier: on, legacy: OFF, flag: true, quoted: "no", n: n}
  datacenters: [y, "seoul-1"]
  drifted: yes
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"country": "no", "canary": "Yes", "tier": "on", "legacy": "OFF", "flag": "true", "quoted": "no", "n": "n"}
	if diff := cmp.Diff(want, spec.GetTargets().GetSelector()); diff != "" {
		t.Errorf("selector (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"y", "seoul-1"}, spec.GetTargets().GetDatacenters()); diff != "" {
		t.Errorf("datacenters (-want +got):\n%s", diff)
	}
	if !spec.GetTargets().GetDrifted() {
		t.Error("drifted: yes did not read as true")
	}

	for _, tt := range []struct{ doc, want string }{
		{base + "targets: {drifted: off}\n", ""},
		{base + "targets: {drifted: maybe}\n", `targets.drifted: "maybe": must be true or false`},
		{"app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/web, keep_releases: yes}\n", `"yes": must be a whole number`},
		// An anchor's word is kept wherever its alias is used.
		{base + "targets: {selector: {a: &w no, b: *w}}\n", ""},
	} {
		spec, err := Parse([]byte(tt.doc))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.doc, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: error %v, want it to say %q", tt.doc, err, tt.want)
		case tt.want == "" && spec.GetTargets().GetDrifted():
			t.Errorf("%q: drifted read as true", tt.doc)
		}
		if sel := spec.GetTargets().GetSelector(); sel != nil && (sel["a"] != "no" || sel["b"] != "no") {
			t.Errorf("%q: selector %v, want a and b both \"no\"", tt.doc, sel)
		}
	}
}

func TestYAML11WordsInInventory(t *testing.T) {
	nodes, err := ParseInventory([]byte(`nodes:
  - {id: a, address: 10.0.0.1, datacenter: dc1, labels: {country: no, on: x, "false": f}}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"country": "no", "on": "x", "false": "f"}
	if diff := cmp.Diff(want, nodes[0].GetLabels()); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
}

// TestYAML11KeysThatCollide: YAML 1.1 reads the keys on and true both as
// true, and the conversion to JSON kept one of them: refused.
func TestYAML11KeysThatCollide(t *testing.T) {
	_, err := ParseInventory([]byte("nodes:\n  - id: a\n    address: 10.0.0.1\n    datacenter: dc1\n    labels:\n      on: x\n      \"true\": t\n"))
	if err == nil || !strings.Contains(err.Error(), `keys "on" (line 6) and "true" both read as "true" in YAML 1.1`) {
		t.Fatalf("ParseInventory = %v, want the two keys named", err)
	}
}
