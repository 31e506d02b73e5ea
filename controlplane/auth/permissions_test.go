package auth_test

import (
	"fmt"
	"strings"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// methodsOf returns the full method names of every service in the files
// of package pkg, as gRPC spells them.
func methodsOf(t *testing.T, pkg protoreflect.FullName) []string {
	t.Helper()
	var out []string
	protoregistry.GlobalFiles.RangeFilesByPackage(pkg, func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				out = append(out, fmt.Sprintf("/%s/%s", sd.FullName(), sd.Methods().Get(j).Name()))
			}
		}
		return true
	})
	return out
}

func TestEveryMethodHasARule(t *testing.T) {
	// Touch the generated packages so their descriptors are registered.
	_ = outpostv1.File_outpost_v1_admin_proto
	_ = healthpb.File_grpc_health_v1_health_proto
	_ = reflectionv1.File_grpc_reflection_v1_reflection_proto
	_ = reflectionv1alpha.File_grpc_reflection_v1alpha_reflection_proto

	var methods []string
	for _, pkg := range []protoreflect.FullName{"outpost.v1", "grpc.health.v1", "grpc.reflection.v1", "grpc.reflection.v1alpha"} {
		ms := methodsOf(t, pkg)
		if len(ms) == 0 {
			t.Fatalf("no services found in package %s: the test would check nothing", pkg)
		}
		methods = append(methods, ms...)
	}
	services := map[string]bool{}
	for _, m := range methods {
		p, ok := auth.Required(m)
		if !ok {
			t.Errorf("%s has no authorization rule: add it to methodPermissions", m)
			continue
		}
		if p == auth.Public && m != outpostv1.GatewayService_JoinGateway_FullMethodName &&
			!strings.HasPrefix(m, "/grpc.health.v1.Health/") {
			t.Errorf("%s is public; only joining and health checks may be", m)
		}
		services[m[:strings.LastIndex(m, "/")]] = true
	}
	for _, svc := range []string{"/outpost.v1.ControlPlaneService", "/outpost.v1.ArtifactService", "/outpost.v1.GatewayService", "/outpost.v1.AdminService"} {
		if !services[svc] {
			t.Errorf("service %s not found among the descriptors", svc)
		}
	}
	// Every GatewayService method except joining is for gateways.
	for _, m := range methodsOf(t, "outpost.v1") {
		p, _ := auth.Required(m)
		isGatewayService := strings.HasPrefix(m, "/outpost.v1.GatewayService/")
		if isGatewayService && m != outpostv1.GatewayService_JoinGateway_FullMethodName && p != auth.Gateway {
			t.Errorf("%s requires %v, want gateway", m, p)
		}
		if !isGatewayService && p == auth.Gateway {
			t.Errorf("%s is for gateways but is not in GatewayService", m)
		}
	}
	if _, ok := auth.Required("/outpost.v1.ControlPlaneService/NoSuchMethod"); ok {
		t.Error("an unknown method has a rule")
	}
}

func TestAllows(t *testing.T) {
	user := func(r pki.Role) pki.Identity { return pki.Identity{Kind: pki.KindUser, Name: "u", Role: r} }
	gw := pki.Identity{Kind: pki.KindGateway, Name: "g", Datacenter: "dc"}
	perms := []auth.Permission{auth.Public, auth.Read, auth.Deploy, auth.Approve, auth.Admin, auth.Gateway}
	for _, tc := range []struct {
		id   pki.Identity
		want []bool // in the order of perms
	}{
		{user(pki.RoleViewer), []bool{true, true, false, false, false, false}},
		{user(pki.RoleDeployer), []bool{true, true, true, false, false, false}},
		{user(pki.RoleApprover), []bool{true, true, false, true, false, false}},
		{user(pki.RoleAdmin), []bool{true, true, true, true, true, false}},
		{gw, []bool{true, false, false, false, false, true}},
		{pki.Identity{}, []bool{true, false, false, false, false, false}},
		{user(pki.RoleUnspecified), []bool{true, false, false, false, false, false}},
	} {
		for i, p := range perms {
			if got := auth.Allows(tc.id, p); got != tc.want[i] {
				t.Errorf("Allows(%v, %v) = %v, want %v", tc.id, p, got, tc.want[i])
			}
		}
	}
	if auth.Allows(user(pki.RoleAdmin), auth.Permission(0)) {
		t.Error("the zero Permission is allowed")
	}
}
