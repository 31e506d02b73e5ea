package audit_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"

	"github.com/outposthq/outpost/controlplane/audit"
)

func TestScrub(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"no secrets here", "no secrets here"},
		{"webhook https://hooks.slack.com/services/T0/B0/XXXX failed", "webhook https://hooks.slack.com/… failed"},
		{"post http://chat.internal:8080/hook?token=abc: 500", "post http://chat.internal:8080/…: 500"},
		{"dial ssh://deploy:pw@10.0.0.1:22", "dial ssh://10.0.0.1:22/…"},
		{"bare host https://example.com is fine", "bare host https://example.com is fine"},
		{`hook env PASSWORD=hunter2 sh start`, `hook env PASSWORD=REDACTED sh start`},
		{`db_password: "two words" left`, `db_password: REDACTED left`},
		{`api_token=abc123, next`, `api_token=REDACTED next`},
		{"the token expired", "the token expired"},
	}
	for _, tt := range tests {
		if got := audit.Scrub(tt.in); got != tt.want {
			t.Errorf("Scrub(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSecretName(t *testing.T) {
	for name, want := range map[string]bool{
		"password": true, "ssh_key": true, "Join_Token": true, "client_secret": true, "credential": true,
		"reason": false, "node_ids": false, "artifact_sha256": false, "state": false,
	} {
		if got := audit.SecretName(name); got != want {
			t.Errorf("SecretName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestAppendSanitizes checks that whatever a caller appends is redacted
// and bounded before it is stored.
func TestAppendSanitizes(t *testing.T) {
	s := storetest.Open(t)
	l := openLog(t, s, audit.Config{})
	ctx := ctxT(t)
	long := strings.Repeat("x", 10000)
	in := &outpostv1.AuditEntry{
		Action:  "test",
		Message: "login with password=hunter2 at https://u:pw@db.internal/x failed " + long,
		Details: map[string]string{"ssh_key": "-----BEGIN", "Webhook_Token": "t0k", "reason": "see https://wiki.internal/page?id=1", "blob": long},
	}
	if err := l.Append(ctx, in); err != nil {
		t.Fatal(err)
	}
	got := listAll(t, l, audit.Query{}, 10)
	if len(got) != 1 {
		t.Fatalf("%d entries, want 1", len(got))
	}
	want := &outpostv1.AuditEntry{
		Action:  "test",
		Message: "login with password=REDACTED at https://db.internal/… failed " + strings.Repeat("x", 2048-len("login with password=REDACTED at https://db.internal/… failed ")-len("…")) + "…",
		Details: map[string]string{"ssh_key": "REDACTED", "Webhook_Token": "REDACTED", "reason": "see https://wiki.internal/…",
			"blob": strings.Repeat("x", 1024-len("…")) + "…"},
	}
	opts := cmp.Options{protocmp.Transform(), protocmp.IgnoreFields(&outpostv1.AuditEntry{}, "time", "sequence", "previous_hash", "hash")}
	if diff := cmp.Diff(want, got[0], opts); diff != "" {
		t.Errorf("stored entry (-want +got):\n%s", diff)
	}
	if in.GetDetails()["ssh_key"] != "-----BEGIN" {
		t.Error("Append changed the caller's details")
	}
}
