// Package kubernetes holds no code: its test decodes the manifests beside
// it strictly against the Kubernetes API types (k8s.io/api), in a module of
// its own so those types stay out of Outpost's dependencies, and checks
// that they agree with each other: etcd members, control plane endpoints,
// Secrets, ConfigMaps and volumes.
package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// decodeAll decodes every document of every manifest strictly: an unknown
// or duplicated field, or a kind the API does not have, fails.
func decodeAll(t *testing.T) (objs []runtime.Object, text map[string]string) {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	codec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("manifests: %v, %v", files, err)
	}
	text = map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text[f] = string(data)
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := codec.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
				continue
			}
			objs = append(objs, obj)
		}
	}
	return objs, text
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs, _ := decodeAll(t)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[fmt.Sprintf("%T", o)]++
	}
	for kind, want := range map[string]int{"*v1.StatefulSet": 2, "*v1.Deployment": 2, "*v1.Service": 2, "*v1.ConfigMap": 1} {
		if kinds[kind] != want {
			t.Errorf("%d %s, want %d (all: %v)", kinds[kind], kind, want, kinds)
		}
	}
}

// TestStrictDecodingCatchesTypos shows the decoder is strict: a misspelt
// field fails.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := appsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	codec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	_, _, err := codec.Decode([]byte("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {replica: 3}\n"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "replica") {
		t.Errorf("decoding a misspelt field: %v, want an error naming it", err)
	}
}

func args(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		k, v, _ := strings.Cut(a, "=")
		out[k] = v
	}
	return out
}

// TestManifestsAgree checks what strict decoding cannot: the control plane
// dials every etcd member, etcd's initial cluster is its replicas, each
// workload's volumes exist, and every Secret a pod needs is either in the
// manifests or created by a `kubectl create secret` line of their headers.
func TestManifestsAgree(t *testing.T) {
	objs, text := decodeAll(t)
	sets := map[string]*appsv1.StatefulSet{}
	var pods []corev1.PodSpec
	var deployments []*appsv1.Deployment
	configMaps := map[string]bool{}
	claims := map[string]bool{}
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			sets[o.Name] = o
			pods = append(pods, o.Spec.Template.Spec)
			for _, c := range o.Spec.VolumeClaimTemplates {
				claims[c.Name] = true
			}
		case *appsv1.Deployment:
			deployments = append(deployments, o)
			pods = append(pods, o.Spec.Template.Spec)
		case *corev1.ConfigMap:
			configMaps[o.Name] = true
		case *corev1.PersistentVolumeClaim:
			claims[o.Name] = true
		}
	}
	etcd, cp := sets["etcd"], sets["outpost-controlplane"]
	if etcd == nil || cp == nil {
		t.Fatalf("StatefulSets %v, want etcd and outpost-controlplane", slices.Sorted(maps.Keys(sets)))
	}
	if *etcd.Spec.Replicas != 3 || *cp.Spec.Replicas != 3 {
		t.Errorf("replicas: etcd %d, control plane %d; want 3 and 3", *etcd.Spec.Replicas, *cp.Spec.Replicas)
	}
	ea := args(etcd.Spec.Template.Spec.Containers[0])
	var members, endpoints []string
	for i := range *etcd.Spec.Replicas {
		host := fmt.Sprintf("etcd-%d.%s.outpost.svc", i, etcd.Spec.ServiceName)
		members = append(members, fmt.Sprintf("etcd-%d=https://%s:2380", i, host))
		endpoints = append(endpoints, fmt.Sprintf("https://%s:2379", host))
	}
	if got := ea["--initial-cluster"]; got != strings.Join(members, ",") {
		t.Errorf("etcd --initial-cluster = %q, want %q", got, strings.Join(members, ","))
	}
	for _, flag := range []string{"--client-cert-auth", "--peer-client-cert-auth"} {
		if _, ok := ea[flag]; !ok {
			t.Errorf("etcd runs without %s", flag)
		}
	}
	ca := args(cp.Spec.Template.Spec.Containers[0])
	if got := ca["--etcd-endpoints"]; got != strings.Join(endpoints, ",") {
		t.Errorf("control plane --etcd-endpoints = %q, want %q", got, strings.Join(endpoints, ","))
	}
	for _, flag := range []string{"--etcd-cacert", "--etcd-cert", "--etcd-key", "--kek-file", "--artifact-dir", "--config"} {
		if ca[flag] == "" {
			t.Errorf("control plane runs without %s", flag)
		}
	}
	if _, ok := ca["--etcd-insecure"]; ok {
		t.Errorf("control plane runs with --etcd-insecure")
	}

	dcs := map[string]bool{}
	for _, d := range deployments {
		dc := d.Spec.Template.Labels["datacenter"]
		if dc == "" || dcs[dc] {
			t.Errorf("Deployment %s: datacenter %q missing or repeated", d.Name, dc)
		}
		dcs[dc] = true
		if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("Deployment %s: one join token joins one gateway: want 1 replica, Recreate", d.Name)
		}
		ga := args(d.Spec.Template.Spec.Containers[0])
		if !strings.HasPrefix(ga["--credential-file"], "/var/lib/outpost/") {
			t.Errorf("Deployment %s keeps its credential in %q, not on its volume", d.Name, ga["--credential-file"])
		}
	}

	created := regexp.MustCompile(`kubectl -n outpost create secret generic (\S+)`)
	var documented []string
	for _, tx := range text {
		for _, m := range created.FindAllStringSubmatch(tx, -1) {
			documented = append(documented, strings.ReplaceAll(m[1], "-DC", ""))
		}
	}
	for _, p := range pods {
		mounted := map[string]bool{}
		for _, c := range append(slices.Clone(p.InitContainers), p.Containers...) {
			for _, m := range c.VolumeMounts {
				mounted[m.Name] = true
			}
		}
		for _, v := range p.Volumes {
			if !mounted[v.Name] {
				t.Errorf("volume %s is mounted by no container", v.Name)
			}
			switch {
			case v.Secret != nil:
				name := v.Secret.SecretName
				if !slices.ContainsFunc(documented, func(d string) bool { return strings.HasPrefix(name, d) }) {
					t.Errorf("Secret %s: no header says how to create it (documented: %v)", name, documented)
				}
			case v.ConfigMap != nil && !configMaps[v.ConfigMap.Name]:
				t.Errorf("ConfigMap %s is not in the manifests", v.ConfigMap.Name)
			case v.PersistentVolumeClaim != nil && !claims[v.PersistentVolumeClaim.ClaimName]:
				t.Errorf("PersistentVolumeClaim %s is not in the manifests", v.PersistentVolumeClaim.ClaimName)
			}
		}
		for _, c := range p.Containers {
			for _, m := range c.VolumeMounts {
				if !claims[m.Name] && !slices.ContainsFunc(p.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
					t.Errorf("container %s mounts %s, which no volume or claim template provides", c.Name, m.Name)
				}
			}
		}
	}
}
