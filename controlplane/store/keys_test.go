package store_test

import (
	"crypto/sha256"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
)

// TestKeys pins the key layout: data written by earlier versions is found
// only under the same strings, so a change here must be deliberate (and
// come with a migration). Every key builder of keys.go has a row;
// TestKeysAllPinned checks that.
func TestKeys(t *testing.T) {
	ts := time.Date(2026, 3, 1, 9, 30, 0, 120000000, time.FixedZone("KST", 9*3600))
	hash := sha256.Sum256([]byte("abc"))
	tests := []struct {
		name string // the builder in keys.go
		got  string
		want string
	}{
		{"Root", store.Root, "/outpost/"},
		{"LeaderPrefix", store.LeaderPrefix, "/outpost/leader"},
		{"NodesPrefix", store.NodesPrefix, "/outpost/nodes/"},
		{"NodeKey", store.NodeKey("srv-0001"), "/outpost/nodes/srv-0001"},
		{"PlansPrefix", store.PlansPrefix, "/outpost/plans/"},
		{"PlanKey", store.PlanKey("p1"), "/outpost/plans/p1"},
		{"RolloutsPrefix", store.RolloutsPrefix, "/outpost/rollouts/"},
		{"RolloutKey", store.RolloutKey("r-00000042"), "/outpost/rollouts/r-00000042"},
		{"RolloutNodesPrefix", store.RolloutNodesPrefix("r1"), "/outpost/rollouts/r1/nodes/"},
		{"RolloutNodeKey", store.RolloutNodeKey("r1", "srv-0001"), "/outpost/rollouts/r1/nodes/srv-0001"},
		{"RevisionsRoot", store.RevisionsRoot, "/outpost/revisions/"},
		{"RevisionsPrefix", store.RevisionsPrefix("billing-api"), "/outpost/revisions/billing-api/"},
		{"RevisionKey", store.RevisionKey("billing-api", 42), "/outpost/revisions/billing-api/0000000042"},
		{"RolloutCounterKey", store.RolloutCounterKey, "/outpost/counters/rollouts"},
		{"CreateRequestKey", store.CreateRequestKey("req-1"), "/outpost/requests/create-rollout/req-1"},
		{"CreateRequestKey", store.CreateRequestKey("validation-reject-r-00000007"), "/outpost/requests/create-rollout/validation-reject-r-00000007"},
		{"VerbRequestKey", store.VerbRequestKey("approve", "req-1"), "/outpost/requests/rollout-verbs/approve/req-1"},
		{"GatewaysPrefix", store.GatewaysPrefix, "/outpost/gateways/"},
		{"GatewayKey", store.GatewayKey("seoul-1"), "/outpost/gateways/seoul-1"},
		{"HostKeyScansPrefix", store.HostKeyScansPrefix, "/outpost/hostkeyscans/"},
		{"NodeStatusPrefix", store.NodeStatusPrefix, "/outpost/nodestatus/"},
		{"NodeDesiredPrefix", store.NodeDesiredPrefix, "/outpost/nodedesired/"},
		{"HostKeyScanKey", store.HostKeyScanKey("srv-0001"), "/outpost/hostkeyscans/srv-0001"},
		{"NodeStatusKey", store.NodeStatusKey("srv-0001"), "/outpost/nodestatus/srv-0001"},
		{"NodeDesiredKey", store.NodeDesiredKey("srv-0001"), "/outpost/nodedesired/srv-0001"},
		{"AuditPrefix", store.AuditPrefix, "/outpost/audit/"},
		{"AuditKey", store.AuditKey(ts, 7), "/outpost/audit/2026-03-01T00:30:00.120000000Z-0000000007"},
		{"AuditIndexPrefix", store.AuditIndexPrefix, "/outpost/auditidx/"},
		{"AuditIndexRolloutPrefix", store.AuditIndexRolloutPrefix("r-7"), "/outpost/auditidx/r-7/"},
		{"AuditCheckpointPrefix", store.AuditCheckpointPrefix, "/outpost/auditcp/"},
		{"AuditCheckpointKey", store.AuditCheckpointKey(42), "/outpost/auditcp/00000000000000000042"},
		{"AuditNodeMarkerKey", store.AuditNodeMarkerKey("r-7", "n1", "SUCCEEDED", "r-7-n1-e5-1"), "/outpost/auditidx/r-7/nodes/n1/SUCCEEDED/r-7-n1-e5-1"},
		{"AuditNodeMarkerKey", store.AuditNodeMarkerKey("r-7", "n2", "SKIPPED", ""), "/outpost/auditidx/r-7/nodes/n2/SKIPPED/-"},
		{"AuditRolloutStateMarkerKey", store.AuditRolloutStateMarkerKey("r-7", "SUCCEEDED"), "/outpost/auditidx/r-7/state/SUCCEEDED"},
		{"JoinTokensPrefix", store.JoinTokensPrefix, "/outpost/jointokens/"},
		{"JoinTokenKey", store.JoinTokenKey(hash), "/outpost/jointokens/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"JoinTokenIDPrefix", store.JoinTokenIDPrefix("ba7816bf8f01cfea"), "/outpost/jointokens/ba7816bf8f01cfea"},
		{"CredentialsPrefix", store.CredentialsPrefix, "/outpost/credentials/"},
		{"CredentialKey", store.CredentialKey("1f3a"), "/outpost/credentials/1f3a"},
		{"RevokedPrefix", store.RevokedPrefix, "/outpost/revoked/"},
		{"RevokedKey", store.RevokedKey("1f3a"), "/outpost/revoked/1f3a"},
		{"CAKey", store.CAKey, "/outpost/ca"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	pinned := make(map[string]bool)
	for _, tt := range tests {
		pinned[tt.name] = true
	}
	for _, name := range layoutNames(t) {
		if !pinned[name] {
			t.Errorf("keys.go declares %s, which TestKeys does not pin: add a row", name)
		}
	}
}

// layoutNames returns the exported string constants and the exported
// functions returning a string declared in keys.go: the key builders.
func layoutNames(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "keys.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			res := d.Type.Results
			if d.Recv == nil && d.Name.IsExported() && res != nil && len(res.List) == 1 && types.ExprString(res.List[0].Type) == "string" {
				names = append(names, d.Name.Name)
			}
		case *ast.GenDecl:
			if d.Tok != token.CONST {
				continue
			}
			for _, spec := range d.Specs {
				for _, n := range spec.(*ast.ValueSpec).Names {
					if n.IsExported() {
						names = append(names, n.Name)
					}
				}
			}
		}
	}
	if len(names) < 20 {
		t.Fatalf("found only %d key builders in keys.go: %q", len(names), names)
	}
	return names
}

// TestLayoutHasOneHome fails when code outside this package builds a key
// from Root or an "/outpost/" literal: keys.go is the one place that
// knows the layout.
func TestLayoutHasOneHome(t *testing.T) {
	root := filepath.Join("..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	bad := regexp.MustCompile(`store\.Root\b|"/outpost/`)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && strings.HasPrefix(d.Name(), ".") || path == filepath.Join(root, "controlplane", "store") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if bad.MatchString(line) {
				t.Errorf("%s:%d builds an etcd key outside controlplane/store/keys.go: %s", path, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKeyOrder checks that lexical key order (etcd's order) is numeric and
// chronological order.
func TestKeyOrder(t *testing.T) {
	revs := []int64{1, 2, 9, 10, 11, 100, 999, 1000, 123456789}
	var keys []string
	for _, n := range revs {
		keys = append(keys, store.RevisionKey("app", n))
	}
	if !slices.IsSorted(keys) {
		t.Errorf("revision keys not in numeric order: %q", keys)
	}

	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	audit := []string{
		store.AuditKey(base, 0),
		store.AuditKey(base, 1),
		store.AuditKey(base, 10),
		store.AuditKey(base.Add(time.Nanosecond), 0),
		store.AuditKey(base.Add(100*time.Millisecond), 0),
		store.AuditKey(base.Add(time.Second), 0),
	}
	if !slices.IsSorted(audit) {
		t.Errorf("audit keys not in time order: %q", audit)
	}
}

func TestCheckID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"srv-0001", true},
		{"billing-api", true},
		{"서버-1", true},
		{"", false},
		{"a/b", false},
		{"..", false},
		{"a\nb", false},
		{"\xff", false},
		{string(make([]byte, 254)), false},
	}
	for _, tt := range tests {
		err := store.CheckID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("CheckID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}
