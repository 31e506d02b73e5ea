package controlplane

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/internal/auditchain"
	"github.com/outposthq/outpost/internal/pki"
)

// checkAuditChain signs a checkpoint on s and walks its whole audit log
// as `outpost audit verify` does, with the CA certificate in s's data
// directory: it must be one unbroken chain from the first entry,
// whichever replica wrote each entry.
func checkAuditChain(t *testing.T, s *Server) auditchain.Summary {
	t.Helper()
	ctx := ctxT(t)
	if err := s.audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.audit.Checkpoint(ctx); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	certPEM, err := os.ReadFile(filepath.Join(s.cfg.DataDir, auth.PKIDir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCertificatePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	cps, _, err := s.audit.ListCheckpoints(ctx, audit.MaxPageSize, "")
	if err != nil {
		t.Fatal(err)
	}
	v, err := auditchain.NewVerifier(auditchain.Options{Key: cert.PublicKey}, cps)
	if err != nil {
		t.Fatal(err)
	}
	token := ""
	for range 1000 {
		entries, next, err := s.audit.List(ctx, audit.Query{}, audit.MaxPageSize, token)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := v.Add(e); err != nil {
				t.Fatalf("audit chain: %v", err)
			}
		}
		if token = next; token == "" {
			break
		}
	}
	sum, err := v.Finish()
	if err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	if sum.First != 1 || sum.Entries != int(sum.Last) || sum.SignedThrough != sum.Last || !sum.Anchored {
		t.Errorf("audit chain = %+v, want entries 1 to the last, each once, signed through the last", sum)
	}
	return sum
}
