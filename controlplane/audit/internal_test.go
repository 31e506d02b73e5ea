package audit

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestEveryMethodHasARule makes a new outpost.v1 method get a decision:
// recorded or not, and what it names.
func TestEveryMethodHasARule(t *testing.T) {
	// Make sure every file of the package is registered.
	_ = outpostv1.File_outpost_v1_audit_proto
	n := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("outpost.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				full := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(j).Name())
				n++
				r, ok := rules[full]
				if !ok {
					t.Errorf("%s has no rule in the audit method table", full)
					continue
				}
				name := string(sd.Methods().Get(j).Name())
				byName := false
				for _, p := range readPrefixes {
					byName = byName || strings.HasPrefix(name, p)
				}
				if r.readOnly != byName && !gatewayStreams[name] {
					t.Errorf("%s: readOnly = %v, but the naming rule says %v", full, r.readOnly, byName)
				}
				if !r.readOnly && r.describe == nil {
					t.Errorf("%s is recorded but names no resource", full)
				}
			}
		}
		return true
	})
	if n < 30 {
		t.Errorf("found only %d methods: are the outpost.v1 files registered?", n)
	}
}

// gatewayStreams are read-only although their names do not say so: the
// gateway's long-lived streams and artifact downloads.
var gatewayStreams = map[string]bool{"Connect": true, "FetchArtifact": true, "ServeHostKeyScans": true}

func TestMutating(t *testing.T) {
	tests := []struct {
		method string
		want   bool
	}{
		{outpostv1.ControlPlaneService_PauseRollout_FullMethodName, true},
		{outpostv1.ControlPlaneService_CreateRollout_FullMethodName, true},
		{outpostv1.ControlPlaneService_ApplyNodes_FullMethodName, true},
		{outpostv1.ArtifactService_UploadArtifact_FullMethodName, true},
		{outpostv1.GatewayService_JoinGateway_FullMethodName, true},
		{outpostv1.AdminService_CreateUser_FullMethodName, true},
		{outpostv1.ControlPlaneService_GetRollout_FullMethodName, false},
		{outpostv1.ControlPlaneService_WatchRollout_FullMethodName, false},
		{outpostv1.ArtifactService_StatArtifact_FullMethodName, false},
		{outpostv1.GatewayService_Connect_FullMethodName, false},
		{outpostv1.GatewayService_FetchArtifact_FullMethodName, false},
		{"/grpc.health.v1.Health/Check", false},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", false},
		// Not in the table: by name, and recorded when in doubt.
		{"/outpost.v2.Future/ListThings", false},
		{"/outpost.v2.Future/GetThing", false},
		{"/outpost.v2.Future/Frobnicate", true},
	}
	for _, tt := range tests {
		if got := Mutating(tt.method); got != tt.want {
			t.Errorf("Mutating(%q) = %v, want %v", tt.method, got, tt.want)
		}
	}
}

// TestUncertainWrite checks that a batch whose write failed without an
// answer is not written again when it had landed, and is when it had not.
func TestUncertainWrite(t *testing.T) {
	s := storetest.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The writer sleeps for an hour after the first entry, so this test
	// drives commit alone.
	l, err := New(Config{Store: s, BatchDelay: time.Hour, Logger: storetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	count := func() int64 {
		resp, err := s.Client().Get(ctx, store.AuditPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	batch := func(n int) []*item {
		var b []*item
		for range n {
			b = append(b, l.newItem(&outpostv1.AuditEntry{Action: "a"}, false))
		}
		return b
	}

	b := batch(3)
	if n, err := l.commit(ctx, b); n != 3 || err != nil {
		t.Fatalf("commit = %d, %v", n, err)
	}
	// The answer was lost, but the batch landed.
	first, err := marshal.Marshal(b[0].e)
	if err != nil {
		t.Fatal(err)
	}
	l.head.valid = false
	l.uncertain = &uncertain{key: store.AuditKey(b[0].e.GetTime().AsTime(), b[0].e.GetSequence()), value: first, n: 3}
	if n, err := l.commit(ctx, b); n != 3 || err != nil {
		t.Fatalf("commit after a lost answer = %d, %v; want 3 (already written)", n, err)
	}
	if got := count(); got != 3 {
		t.Errorf("%d entries after re-committing a landed batch, want 3", got)
	}

	// The answer was lost and the batch did not land.
	b = batch(2)
	l.head.valid = false
	l.uncertain = &uncertain{key: store.AuditKey(time.Now(), 4), value: []byte("never written"), n: 2}
	if n, err := l.commit(ctx, b); n != 2 || err != nil {
		t.Fatalf("commit = %d, %v", n, err)
	}
	if got := count(); got != 5 {
		t.Errorf("%d entries, want 5", got)
	}
	if b[1].e.GetSequence() != 5 {
		t.Errorf("sequence %d, want 5", b[1].e.GetSequence())
	}
}
