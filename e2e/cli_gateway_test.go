package e2e

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// e2eGatewayVersion is the version the test gateways report.
const e2eGatewayVersion = "v0.0.0-e2e"

// TestCLIGatewayList lists the gateways of a real system with the outpost
// command line: both connected gateways, with the version each sent in
// its hello, in the table and as the API's JSON.
func TestCLIGatewayList(t *testing.T) {
	s := newSystem(t, 2, alternateDC)
	s.twoGateways()

	var list outpostv1.ListGatewaysResponse
	deadline := time.Now().Add(waitLimit)
	for {
		code, out := s.runCLI(t, "gateway", "list", "-o", "json", "--controlplane", s.addr)
		if code != 0 {
			t.Fatalf("gateway list -o json: exit %d", code)
		}
		if err := protojson.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("gateway list -o json is not a ListGatewaysResponse: %v\n%s", err, out)
		}
		if len(list.GetGateways()) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, gateway list shows %d gateways, want 2:\n%s", waitLimit, len(list.GetGateways()), out)
		}
		time.Sleep(pollEvery)
	}
	for i, want := range []struct{ name, dc string }{{"gw-a", dcA}, {"gw-b", dcB}} {
		g := list.GetGateways()[i]
		if g.GetName() != want.name || g.GetDatacenter() != want.dc || g.GetVersion() != e2eGatewayVersion ||
			g.GetConnectTime() == nil || g.GetNodesInFlight() != 0 || g.GetCapacity() <= 0 {
			t.Errorf("gateway %d = %v, want %s of %s, version %s, connected, no nodes in flight", i, g, want.name, want.dc, e2eGatewayVersion)
		}
	}

	code, out := s.runCLI(t, "gateway", "list", "--controlplane", s.addr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "NODES IN FLIGHT") ||
		!strings.Contains(lines[1], "gw-a") || !strings.Contains(lines[1], e2eGatewayVersion) {
		t.Errorf("gateway list: exit %d, table:\n%s", code, out)
	}
	if code, out := s.runCLI(t, "gateway", "list", "--datacenter", dcB, "-o", "wide", "--controlplane", s.addr); code != 0 ||
		strings.Contains(out, "gw-a") || !strings.Contains(out, "gw-b") || !strings.Contains(out, "CAPACITY") {
		t.Errorf("gateway list --datacenter %s -o wide: exit %d, table:\n%s", dcB, code, out)
	}
}
