package controlplane

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	yamlv3 "go.yaml.in/yaml/v3"
	sigsyaml "sigs.k8s.io/yaml"
)

// referenceConfig is the commented configuration reference: every key of
// FileConfig with its default.
const referenceConfig = "../deploy/examples/controlplane-config.yaml"

// TestConfigReferenceLoads loads the reference and the configuration the
// packages install with the real loader.
func TestConfigReferenceLoads(t *testing.T) {
	fc, err := LoadFileConfig(referenceConfig)
	if err != nil {
		t.Fatal(err)
	}
	prod, ok := fc.Environments["prod"]
	if !ok || !prod.Protected || prod.ApprovalTTL != 24*time.Hour || prod.MaxUnpackedBytes != 8<<30 ||
		prod.MaxUnpackedRatio != 200 || len(prod.HookAllowList) == 0 || len(prod.DeployPathPrefixes) == 0 {
		t.Errorf("reference prod = %+v, want every key set", prod)
	}
	if _, ok := fc.Environments["staging"]; !ok {
		t.Errorf("reference environments = %v, want staging too", fc.Environments)
	}
	shipped, err := LoadFileConfig("../deploy/packaging/controlplane.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(shipped.Environments) != 0 {
		t.Errorf("the packaged configuration declares %v, want nothing", shipped.Environments)
	}
}

// configKeys lists the dotted keys of a configuration type, "*" standing
// for a map's keys (environments.*.protected).
func configKeys(t reflect.Type, path string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		for f := range t.Fields() {
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			*out = append(*out, joinKey(path, tag))
			configKeys(f.Type, joinKey(path, tag), out)
		}
	case reflect.Map:
		configKeys(t.Elem(), joinKey(path, "*"), out)
	}
}

// referenceKeys lists the keys written in a YAML document the same way,
// as t reads them.
func referenceKeys(n *yamlv3.Node, t reflect.Type, path string, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind != yamlv3.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		switch t.Kind() {
		case reflect.Struct:
			for f := range t.Fields() {
				if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == k {
					out[joinKey(path, k)] = true
					referenceKeys(v, f.Type, joinKey(path, k), out)
				}
			}
		case reflect.Map:
			referenceKeys(v, t.Elem(), joinKey(path, "*"), out)
		}
	}
}

// TestConfigReferenceHasEveryKey fails when the loader knows a key that
// the reference does not show: add it there, with its default.
func TestConfigReferenceHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(referenceConfig)
	if err != nil {
		t.Fatal(err)
	}
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeFor[fileConfigYAML]()
	var want []string
	configKeys(typ, "", &want)
	if len(want) < 8 {
		t.Fatalf("configKeys found %v: the walk is broken", want)
	}
	got := map[string]bool{}
	referenceKeys(doc.Content[0], typ, "", got)
	for _, k := range want {
		if !got[k] {
			t.Errorf("%s: the loader reads this key; %s does not show it with its default", k, referenceConfig)
		}
		if !strings.Contains(string(data), "Default") {
			t.Fatalf("%s says no default", referenceConfig)
		}
	}
}

// TestKubernetesConfigLoads loads the configuration the Kubernetes
// manifest puts in its ConfigMap with the real loader.
func TestKubernetesConfigLoads(t *testing.T) {
	data, err := os.ReadFile("../deploy/kubernetes/controlplane.yaml")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var cm struct {
			Kind string            `json:"kind"`
			Data map[string]string `json:"data"`
		}
		if err := sigsyaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatal(err)
		}
		if cm.Kind != "ConfigMap" || cm.Data["controlplane.yaml"] == "" {
			continue
		}
		found = true
		fc, err := ParseFileConfig([]byte(cm.Data["controlplane.yaml"]))
		if err != nil {
			t.Errorf("the ConfigMap's controlplane.yaml: %v", err)
		} else if !fc.Environments["prod"].Protected {
			t.Errorf("the ConfigMap's prod environment = %+v, want protected", fc.Environments["prod"])
		}
	}
	if !found {
		t.Error("no ConfigMap with controlplane.yaml in deploy/kubernetes/controlplane.yaml")
	}
}

// TestConfigErrorsSayYAML: a mistake in the configuration is reported as
// YAML, with the line and the key, never as JSON or a Go type.
func TestConfigErrorsSayYAML(t *testing.T) {
	// The Kubernetes manifest that once sat beside the example configs.
	_, err := LoadFileConfig("../deploy/kubernetes/controlplane.yaml")
	if err == nil {
		t.Fatal("a Kubernetes manifest loaded as the configuration")
	}
	for _, want := range []string{"controlplane.yaml", `unknown key "apiVersion"`, "Kubernetes manifest", "line "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("LoadFileConfig(manifest) = %v, want it to say %q", err, want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"environments:\n  prod:\n    protected: true\n    aproval_ttl: 1h\n", `line 4: environments.prod: unknown key "aproval_ttl" (known: allow_self_approval, allow_setuid, approval_ttl,`},
		{"environments:\n  prod:\n    protected: maybe\n", `line 3: environments.prod.protected: "maybe" must be true or false`},
		{"environments:\n  prod:\n    max_unpacked_ratio: 1.5\n", `line 3: environments.prod.max_unpacked_ratio: "1.5" must be a whole number`},
		{"environments:\n  prod:\n    hook_allow_list: [123]\n", `line 3: environments.prod.hook_allow_list[0]: 123 must be text`},
		{"environments:\n  prod:\n    hook_allow_list: [no]\n", `line 3: environments.prod.hook_allow_list[0]: no would be read as true or false: write it in quotes ("no")`},
		{"environments:\n  prod:\n    deploy_path_prefixes: /srv\n", `line 3: environments.prod.deploy_path_prefixes: must be a list`},
		{"environments: [prod]\n", `line 1: environments: must be a mapping`},
		{"environments: {}\n---\nenvironments: {}\n", `line 2: a second YAML document`},
		{"environments:\n  prod: {protected: true\n", `not valid YAML: line `},
		{"environments:\n  prod: {}\n  prod: {}\n", `line 3: environments: key "prod" set twice (first on line 2)`},
	} {
		_, err := ParseFileConfig([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseFileConfig(%q) = %v, want an error containing %q", tt.in, err, tt.want)
			continue
		}
		if msg := err.Error(); slices.ContainsFunc([]string{"JSON", "json", "Go struct", "environmentYAML"}, func(s string) bool { return strings.Contains(msg, s) }) {
			t.Errorf("ParseFileConfig(%q) = %v: speaks of JSON or Go types", tt.in, err)
		}
	}
	for _, in := range []string{"", "# nothing\n", "environments:\n", "environments: {}\n"} {
		if fc, err := ParseFileConfig([]byte(in)); err != nil || len(fc.Environments) != 0 {
			t.Errorf("ParseFileConfig(%q) = %v, %v; want no environment", in, fc, err)
		}
	}
}
