package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// realAudit is the real audit log on an embedded etcd, served by the real
// AuditService over TLS on loopback, its checkpoints signed by the test
// CA's key as the control plane's are by its CA's.
type realAudit struct {
	addr  string
	store *store.Store
	log   *audit.Log
}

func startRealAudit(t *testing.T, entries int) *realAudit {
	t.Helper()
	s := storetest.Open(t)
	l, err := audit.New(audit.Config{Store: s, Signer: testCA.Signer(), Logger: storetest.Logger(), CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l.Close(ctx) //nolint:errcheck // the test is over
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range entries {
		e := &outpostv1.AuditEntry{Action: "/outpost.v1.ControlPlaneService/PauseRollout", Actor: "alice",
			ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_USER, Resource: fmt.Sprintf("rollouts/r-%d", i), Result: "OK"}
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
		if i == entries-3 {
			if _, err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer()
	outpostv1.RegisterAuditServiceServer(srv, audit.NewServer(l))
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return &realAudit{addr: lis.Addr().String(), store: s, log: l}
}

func (r *realAudit) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLI(t, map[string]string{controlPlaneEnv: r.addr}, args...)
}

// edit rewrites the stored entry with sequence seq through a raw etcd
// client; del deletes it instead.
func (r *realAudit) edit(t *testing.T, seq int64, del bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := r.store.Client().Get(ctx, store.AuditPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		e := &outpostv1.AuditEntry{}
		if err := proto.Unmarshal(kv.Value, e); err != nil {
			t.Fatal(err)
		}
		if e.GetSequence() != seq {
			continue
		}
		if del {
			_, err = r.store.Client().Delete(ctx, string(kv.Key))
		} else {
			e.Actor = "mallory"
			b, _ := proto.Marshal(e)
			_, err = r.store.Client().Put(ctx, string(kv.Key), string(b))
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no entry %d", seq)
}

func TestAuditVerifyAgainstTheRealLog(t *testing.T) {
	r := startRealAudit(t, 12)
	code, out, errOut := r.run(t, "audit", "verify")
	if code != 0 || !strings.Contains(out, "audit log verified: 12 entries, sequence 1 to 12, 1 checkpoints") ||
		!strings.Contains(out, "signed through entry 10; the 2 entries after it are chained but not yet signed") {
		t.Fatalf("audit verify = %d\n%s%s", code, out, errOut)
	}

	r.edit(t, 4, false)
	code, out, errOut = r.run(t, "audit", "verify")
	if code != 1 || !strings.Contains(errOut, "audit log does not verify: entry 4 (") || !strings.Contains(errOut, "edited") {
		t.Errorf("audit verify after editing entry 4 = %d\n%s%s", code, out, errOut)
	}

	r2 := startRealAudit(t, 12)
	r2.edit(t, 7, true)
	code, out, errOut = r2.run(t, "audit", "verify")
	if code != 1 || !strings.Contains(errOut, "entry 7 before it was removed") {
		t.Errorf("audit verify after deleting entry 7 = %d\n%s%s", code, out, errOut)
	}
	// --since starts a window after the damage: it holds.
	code, out, errOut = r2.run(t, "audit", "verify", "--since", time.Now().Add(time.Hour).Format(time.RFC3339))
	if code != 0 || !strings.Contains(out, "no audit entries") {
		t.Errorf("audit verify --since the future = %d\n%s%s", code, out, errOut)
	}
}

func TestAuditExportVerifiesOffline(t *testing.T) {
	r := startRealAudit(t, 12)
	dir := t.TempDir()
	code, export, errOut := r.run(t, "audit", "export")
	if code != 0 {
		t.Fatalf("audit export = %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(export), "\n")
	if len(lines) != 13 || !strings.HasPrefix(lines[0], `{"checkpoint":{`) || !strings.Contains(lines[1], `"hash":"`) {
		t.Fatalf("export has %d lines, want a checkpoint then 12 entries with their hashes:\n%s", len(lines), export)
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, testCA.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name string, lines []string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Offline: no control plane address works here.
	offline := func(path string) (int, string, string) {
		return runCLI(t, map[string]string{controlPlaneEnv: "127.0.0.1:1"}, "audit", "verify", "--file", path, "--ca", caFile)
	}
	if code, out, errOut := offline(write("good.jsonl", lines)); code != 0 || !strings.Contains(out, "audit log verified: 12 entries") {
		t.Fatalf("verify --file of the export = %d\n%s%s", code, out, errOut)
	}

	edited := append([]string(nil), lines...)
	edited[6] = strings.Replace(edited[6], `"actor":"alice"`, `"actor":"bob"`, 1)
	if edited[6] == lines[6] {
		t.Fatalf("line 7 has no actor to edit: %s", lines[6])
	}
	if code, out, errOut := offline(write("edited.jsonl", edited)); code != 1 || !strings.Contains(errOut, "line 7: entry 6 (") {
		t.Errorf("verify --file with line 7 edited = %d\n%s%s", code, out, errOut)
	}
	dropped := append(append([]string(nil), lines[:6]...), lines[7:]...)
	if code, out, errOut := offline(write("dropped.jsonl", dropped)); code != 1 || !strings.Contains(errOut, "entry 6 before it was removed") {
		t.Errorf("verify --file with line 7 removed = %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, nil, "audit", "verify", "--file", filepath.Join(dir, "good.jsonl")); code != 2 || !strings.Contains(errOut, "--file needs --ca") {
		t.Errorf("verify --file without --ca = %d\n%s%s", code, out, errOut)
	}
	// Another CA's certificate does not verify the checkpoints.
	other := filepath.Join(dir, "other.crt")
	if err := os.WriteFile(other, otherCACert(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, nil, "audit", "verify", "--file", filepath.Join(dir, "good.jsonl"), "--ca", other); code != 1 || !strings.Contains(errOut, "not the trusted key") {
		t.Errorf("verify --file --ca OTHER = %d\n%s%s", code, out, errOut)
	}
}

// otherCACert returns the certificate of a CA that is not the test CA.
func otherCACert(t *testing.T) []byte {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM()
}
