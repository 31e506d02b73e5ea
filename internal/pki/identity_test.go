package pki_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/outposthq/outpost/internal/pki"
)

func TestIdentityURIRoundTrip(t *testing.T) {
	for _, id := range []pki.Identity{
		{Kind: pki.KindUser, Name: "alice", Role: pki.RoleViewer},
		{Kind: pki.KindUser, Name: "ci-bot@example.com", Role: pki.RoleDeployer},
		{Kind: pki.KindUser, Name: "B.o_b", Role: pki.RoleApprover},
		{Kind: pki.KindUser, Name: "root", Role: pki.RoleAdmin},
		{Kind: pki.KindGateway, Name: "gw-1", Datacenter: "seoul-1"},
		{Kind: pki.KindGateway, Name: "x", Datacenter: "d"},
	} {
		uri := id.URI().String()
		got, err := pki.ParseIdentityURI(uri)
		if err != nil {
			t.Errorf("ParseIdentityURI(%q) error: %v", uri, err)
			continue
		}
		if diff := cmp.Diff(id, got); diff != "" {
			t.Errorf("ParseIdentityURI(%q) mismatch (-want +got):\n%s", uri, diff)
		}
	}
	if got, want := (pki.Identity{Kind: pki.KindUser, Name: "alice", Role: pki.RoleAdmin}).URI().String(), "outpost://user/alice?role=admin"; got != want {
		t.Errorf("URI = %q, want %q", got, want)
	}
	if got, want := (pki.Identity{Kind: pki.KindGateway, Name: "gw", Datacenter: "seoul-1"}).URI().String(), "outpost://gateway/gw?dc=seoul-1"; got != want {
		t.Errorf("URI = %q, want %q", got, want)
	}
}

func TestParseIdentityURIRefuses(t *testing.T) {
	for _, uri := range []string{
		"",
		"https://user/alice?role=admin",
		"OUTPOST://user/alice?role=admin",
		"outpost://admin/alice?role=admin",
		"outpost://user/alice",
		"outpost://user/alice?role=root",
		"outpost://user/alice?role=Admin",
		"outpost://user/alice?role=admin&role=viewer",
		"outpost://user/alice?role=viewer&role=admin",
		"outpost://user/alice?role=admin&dc=x",
		"outpost://user/alice?dc=x&role=admin",
		"outpost://user/alice?role=admin#frag",
		"outpost://user/alice?role=admin&",
		"outpost://user/alice/?role=admin",
		"outpost://user/alice/bob?role=admin",
		"outpost://user//alice?role=admin",
		"outpost://user/%61lice?role=admin",
		"outpost://user/al%2Fice?role=admin",
		"outpost://user/?role=admin",
		"outpost://eve@user/alice?role=admin",
		"outpost://user:1/alice?role=admin",
		"outpost://user/-alice?role=admin",
		"outpost://user/alice.?role=admin",
		"outpost://user/al ice?role=admin",
		"outpost://user/" + strings.Repeat("a", 65) + "?role=admin",
		"outpost://gateway/gw",
		"outpost://gateway/gw?dc=",
		"outpost://gateway/gw?dc=seoul-1&role=admin",
		"outpost://gateway/gw?dc=se@oul",
		"outpost://gateway/gw?dc=seoul%2D1",
		"outpost:user/alice?role=admin",
	} {
		if id, err := pki.ParseIdentityURI(uri); err == nil {
			t.Errorf("ParseIdentityURI(%q) = %+v, want error", uri, id)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nameOK bool
		dcOK   bool
	}{
		{"a", true, true},
		{"seoul-1", true, true},
		{"a.b_c-d", true, true},
		{"alice@example.com", true, false},
		{strings.Repeat("z", 64), true, true},
		{strings.Repeat("z", 65), false, false},
		{"", false, false},
		{"-a", false, false},
		{"a-", false, false},
		{".", false, false},
		{"..", false, false},
		{"a/b", false, false},
		{"a b", false, false},
		{"a\nb", false, false},
		{"한국", false, false},
		{"a%2fb", false, false},
	} {
		if err := pki.CheckName(tc.name); (err == nil) != tc.nameOK {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.nameOK)
		}
		if err := pki.CheckDatacenter(tc.name); (err == nil) != tc.dcOK {
			t.Errorf("CheckDatacenter(%q) = %v, want ok=%v", tc.name, err, tc.dcOK)
		}
	}
}

func TestIdentityValidate(t *testing.T) {
	for _, tc := range []struct {
		id pki.Identity
		ok bool
	}{
		{pki.Identity{Kind: pki.KindUser, Name: "a", Role: pki.RoleAdmin}, true},
		{pki.Identity{Kind: pki.KindUser, Name: "a"}, false},
		{pki.Identity{Kind: pki.KindUser, Name: "a", Role: pki.RoleAdmin + 1}, false},
		{pki.Identity{Kind: pki.KindUser, Name: "a", Role: pki.RoleAdmin, Datacenter: "x"}, false},
		{pki.Identity{Kind: pki.KindGateway, Name: "a", Datacenter: "x"}, true},
		{pki.Identity{Kind: pki.KindGateway, Name: "a"}, false},
		{pki.Identity{Kind: pki.KindGateway, Name: "a", Datacenter: "x", Role: pki.RoleViewer}, false},
		{pki.Identity{Name: "a", Role: pki.RoleAdmin}, false},
		{pki.Identity{Kind: pki.KindUser, Role: pki.RoleAdmin}, false},
	} {
		if err := tc.id.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

func TestParseRoleAndKind(t *testing.T) {
	for _, r := range []pki.Role{pki.RoleViewer, pki.RoleDeployer, pki.RoleApprover, pki.RoleAdmin} {
		got, err := pki.ParseRole(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %v, %v; want %v", r.String(), got, err, r)
		}
	}
	if _, err := pki.ParseRole("root"); err == nil {
		t.Error("ParseRole(root) succeeded")
	}
	for _, k := range []pki.Kind{pki.KindUser, pki.KindGateway} {
		got, err := pki.ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", k.String(), got, err, k)
		}
	}
	if _, err := pki.ParseKind("node"); err == nil {
		t.Error("ParseKind(node) succeeded")
	}
}
