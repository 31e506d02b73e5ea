package auth

import (
	"fmt"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Permission is what a call requires of its caller.
type Permission int

// Permissions. The zero Permission marks a method not in the table, which
// is denied.
const (
	permUnknown Permission = iota
	// Public calls need no credential: joining, health checks.
	Public
	// Read is for viewers and up.
	Read
	// Deploy is for deployers and admins.
	Deploy
	// Approve is for approvers and admins.
	Approve
	// Admin is for admins.
	Admin
	// Gateway is for gateways only; no user role grants it.
	Gateway
)

var permissionNames = map[Permission]string{
	Public: "public", Read: "read", Deploy: "deploy", Approve: "approve", Admin: "admin", Gateway: "gateway",
}

// String returns the permission's name.
func (p Permission) String() string {
	if s, ok := permissionNames[p]; ok {
		return s
	}
	return fmt.Sprintf("Permission(%d)", int(p))
}

// neededRole is the least role granting a user permission, for messages.
var neededRole = map[Permission]pki.Role{
	Read:    pki.RoleViewer,
	Deploy:  pki.RoleDeployer,
	Approve: pki.RoleApprover,
	Admin:   pki.RoleAdmin,
}

// grants lists each role's permissions: only viewer is contained in the
// others (see the package comment).
var grants = map[pki.Role][]Permission{
	pki.RoleViewer:   {Read},
	pki.RoleDeployer: {Read, Deploy},
	pki.RoleApprover: {Read, Approve},
	pki.RoleAdmin:    {Read, Deploy, Approve, Admin},
}

// Allows reports whether identity id holds permission p. Public is held
// by everyone, Gateway only by gateways, the rest by users whose role
// grants it.
func Allows(id pki.Identity, p Permission) bool {
	switch {
	case p == Public:
		return true
	case p == Gateway:
		return id.Kind == pki.KindGateway
	case id.Kind != pki.KindUser:
		return false
	}
	for _, g := range grants[id.Role] {
		if g == p {
			return true
		}
	}
	return false
}

// Required returns what the method (a full gRPC method name,
// "/outpost.v1.ControlPlaneService/CreateRollout") requires, and false
// when the method is not in the table: such calls are denied.
func Required(fullMethod string) (Permission, bool) {
	p, ok := methodPermissions[fullMethod]
	return p, ok
}

// methodPermissions is the one table of who may call what. A test checks
// that every method of every outpost.v1 service has an entry.
var methodPermissions = map[string]Permission{
	// Nodes. The inventory decides where deployments go and pins host
	// keys (the trust anchors for SSH), so changing it is an admin's job.
	outpostv1.ControlPlaneService_ApplyNodes_FullMethodName: Admin,
	outpostv1.ControlPlaneService_DeleteNode_FullMethodName: Admin,
	outpostv1.ControlPlaneService_ListNodes_FullMethodName:  Read,
	outpostv1.ControlPlaneService_GetNode_FullMethodName:    Read,
	// Scanning makes a gateway connect to a node, and its result is what
	// TrustNodeHostKey pins: both are the inventory's trust anchors.
	outpostv1.ControlPlaneService_ScanNodeHostKey_FullMethodName:  Admin,
	outpostv1.ControlPlaneService_TrustNodeHostKey_FullMethodName: Admin,
	// Verifying only reads the nodes (one read-only command each), but it
	// makes every gateway log in to them: deployers may.
	outpostv1.ControlPlaneService_VerifyNodes_FullMethodName: Deploy,

	// Rollouts: reading.
	outpostv1.ControlPlaneService_GetRollout_FullMethodName:       Read,
	outpostv1.ControlPlaneService_ListRollouts_FullMethodName:     Read,
	outpostv1.ControlPlaneService_ListRolloutNodes_FullMethodName: Read,
	outpostv1.ControlPlaneService_WatchRollout_FullMethodName:     Read,
	outpostv1.ControlPlaneService_ListRevisions_FullMethodName:    Read,
	// Which gateways are connected, with their versions: no secrets.
	outpostv1.ControlPlaneService_ListGateways_FullMethodName: Read,

	// Rollouts: deploying and steering.
	outpostv1.ControlPlaneService_CreateRollout_FullMethodName:  Deploy,
	outpostv1.ControlPlaneService_PauseRollout_FullMethodName:   Deploy,
	outpostv1.ControlPlaneService_ResumeRollout_FullMethodName:  Deploy,
	outpostv1.ControlPlaneService_AbortRollout_FullMethodName:   Deploy,
	outpostv1.ControlPlaneService_PromoteRollout_FullMethodName: Deploy,
	outpostv1.ControlPlaneService_RetryRollout_FullMethodName:   Deploy,

	// Rollouts: the second pair of eyes. That the approver is not the
	// requester is checked by the engine, with FromContext.
	outpostv1.ControlPlaneService_ApproveRollout_FullMethodName:  Approve,
	outpostv1.ControlPlaneService_RejectRollout_FullMethodName:   Approve,
	outpostv1.ControlPlaneService_ValidateRollout_FullMethodName: Approve,

	// Artifacts.
	outpostv1.ArtifactService_UploadArtifact_FullMethodName: Deploy,
	outpostv1.ArtifactService_StatArtifact_FullMethodName:   Read,

	// Gateways. Joining is how a gateway gets its first certificate, so it
	// cannot require one; the join token is checked by the handler.
	outpostv1.GatewayService_Connect_FullMethodName:                 Gateway,
	outpostv1.GatewayService_FetchArtifact_FullMethodName:           Gateway,
	outpostv1.GatewayService_RenewGatewayCertificate_FullMethodName: Gateway,
	outpostv1.GatewayService_ServeHostKeyScans_FullMethodName:       Gateway,
	outpostv1.GatewayService_JoinGateway_FullMethodName:             Public,

	// Administration.
	outpostv1.AdminService_CreateJoinToken_FullMethodName:  Admin,
	outpostv1.AdminService_ListJoinTokens_FullMethodName:   Admin,
	outpostv1.AdminService_RevokeJoinToken_FullMethodName:  Admin,
	outpostv1.AdminService_CreateUser_FullMethodName:       Admin,
	outpostv1.AdminService_ListCredentials_FullMethodName:  Admin,
	outpostv1.AdminService_RevokeCredential_FullMethodName: Admin,

	// The audit log holds no secrets (no request bodies); everyone who may
	// see rollouts may see who made them.
	outpostv1.AuditService_ListAuditEntries_FullMethodName:     Read,
	outpostv1.AuditService_WatchAuditEntries_FullMethodName:    Read,
	outpostv1.AuditService_ListAuditCheckpoints_FullMethodName: Read,

	// Health checks come from load balancers and orchestrators, which hold
	// no credential; they reveal only whether the server serves.
	healthpb.Health_Check_FullMethodName: Public,
	healthpb.Health_Watch_FullMethodName: Public,
	healthpb.Health_List_FullMethodName:  Public,

	// Reflection (grpcurl) describes the API; viewers may see it.
	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      Read,
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: Read,
}
