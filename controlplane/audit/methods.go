package audit

import (
	"strconv"
	"strings"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// rule is what the audit log knows about one gRPC method.
type rule struct {
	// readOnly methods are not recorded.
	readOnly bool
	// describe fills the entry's resource, ids and details from the
	// request (the first message of a client stream) and the response
	// (nil when the call failed). It reads only fields known to hold no
	// secret. nil means the method names no resource.
	describe func(req, resp proto.Message, e *outpostv1.AuditEntry)
}

// rules is the table of methods. A test checks that every method of every
// outpost.v1 service is in it, so a new method gets a decision; a method
// missing from it is recorded unless its name starts with Get, List, Watch
// or Stat (see Mutating).
var rules = map[string]rule{
	// Nodes.
	outpostv1.ControlPlaneService_ApplyNodes_FullMethodName: {describe: applyNodes},
	outpostv1.ControlPlaneService_DeleteNode_FullMethodName: {describe: nodeByID},
	// A scan makes a gateway reach the node and stores what it saw.
	outpostv1.ControlPlaneService_ScanNodeHostKey_FullMethodName:  {describe: nodeByID},
	outpostv1.ControlPlaneService_TrustNodeHostKey_FullMethodName: {describe: trustHostKey},
	outpostv1.ControlPlaneService_ListNodes_FullMethodName:        {readOnly: true},
	// Who asked for a verification is recorded; its findings are
	// node.drift entries, the first time each drift is seen.
	outpostv1.ControlPlaneService_VerifyNodes_FullMethodName:  {describe: verifyNodes},
	outpostv1.ControlPlaneService_GetNode_FullMethodName:      {readOnly: true},
	outpostv1.ControlPlaneService_ListGateways_FullMethodName: {readOnly: true},

	// Rollouts.
	outpostv1.ControlPlaneService_CreateRollout_FullMethodName:    {describe: createRollout},
	outpostv1.ControlPlaneService_PauseRollout_FullMethodName:     {describe: rolloutVerb},
	outpostv1.ControlPlaneService_ResumeRollout_FullMethodName:    {describe: rolloutVerb},
	outpostv1.ControlPlaneService_AbortRollout_FullMethodName:     {describe: rolloutVerb},
	outpostv1.ControlPlaneService_PromoteRollout_FullMethodName:   {describe: rolloutVerb},
	outpostv1.ControlPlaneService_RetryRollout_FullMethodName:     {describe: rolloutVerb},
	outpostv1.ControlPlaneService_ApproveRollout_FullMethodName:   {describe: approveRollout},
	outpostv1.ControlPlaneService_RejectRollout_FullMethodName:    {describe: rolloutVerb},
	outpostv1.ControlPlaneService_ValidateRollout_FullMethodName:  {describe: rolloutVerb},
	outpostv1.ControlPlaneService_GetRollout_FullMethodName:       {readOnly: true},
	outpostv1.ControlPlaneService_ListRollouts_FullMethodName:     {readOnly: true},
	outpostv1.ControlPlaneService_ListRolloutNodes_FullMethodName: {readOnly: true},
	outpostv1.ControlPlaneService_WatchRollout_FullMethodName:     {readOnly: true},
	outpostv1.ControlPlaneService_ListRevisions_FullMethodName:    {readOnly: true},

	// Artifacts.
	outpostv1.ArtifactService_UploadArtifact_FullMethodName: {describe: uploadArtifact},
	outpostv1.ArtifactService_StatArtifact_FullMethodName:   {readOnly: true},

	// Gateways. Connect carries assignments and step events, which the
	// engine folds into node.result entries; ServeHostKeyScans carries the
	// scans ScanNodeHostKey asked for, recorded there; FetchArtifact only
	// reads.
	outpostv1.GatewayService_Connect_FullMethodName:                 {readOnly: true},
	outpostv1.GatewayService_ServeHostKeyScans_FullMethodName:       {readOnly: true},
	outpostv1.GatewayService_FetchArtifact_FullMethodName:           {readOnly: true},
	outpostv1.GatewayService_JoinGateway_FullMethodName:             {describe: joinGateway},
	outpostv1.GatewayService_RenewGatewayCertificate_FullMethodName: {describe: renewGateway},

	// Administration.
	outpostv1.AdminService_CreateJoinToken_FullMethodName:  {describe: createJoinToken},
	outpostv1.AdminService_RevokeJoinToken_FullMethodName:  {describe: revokeJoinToken},
	outpostv1.AdminService_CreateUser_FullMethodName:       {describe: createUser},
	outpostv1.AdminService_RevokeCredential_FullMethodName: {describe: revokeCredential},
	outpostv1.AdminService_ListJoinTokens_FullMethodName:   {readOnly: true},
	outpostv1.AdminService_ListCredentials_FullMethodName:  {readOnly: true},

	// The audit log itself.
	outpostv1.AuditService_ListAuditEntries_FullMethodName:     {readOnly: true},
	outpostv1.AuditService_WatchAuditEntries_FullMethodName:    {readOnly: true},
	outpostv1.AuditService_ListAuditCheckpoints_FullMethodName: {readOnly: true},

	// Infrastructure.
	healthpb.Health_Check_FullMethodName:                                   {readOnly: true},
	healthpb.Health_Watch_FullMethodName:                                   {readOnly: true},
	healthpb.Health_List_FullMethodName:                                    {readOnly: true},
	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      {readOnly: true},
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: {readOnly: true},
}

// readPrefixes name methods that only read, by the API's naming rules.
var readPrefixes = []string{"Get", "List", "Watch", "Stat"}

// Mutating reports whether calls of fullMethod
// ("/outpost.v1.ControlPlaneService/PauseRollout") are recorded: methods
// in the table as it says, any other method unless its name starts with
// Get, List, Watch or Stat. Unknown methods are recorded rather than
// missed.
func Mutating(fullMethod string) bool {
	if r, ok := rules[fullMethod]; ok {
		return !r.readOnly
	}
	name := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	for _, p := range readPrefixes {
		if strings.HasPrefix(name, p) {
			return false
		}
	}
	return true
}

// detail sets a detail unless value is empty.
func detail(e *outpostv1.AuditEntry, key, value string) {
	if value == "" {
		return
	}
	if e.Details == nil {
		e.Details = map[string]string{}
	}
	e.Details[key] = value
}

func setRollout(e *outpostv1.AuditEntry, id string) {
	if id != "" {
		e.Resource = "rollouts/" + id
		e.RolloutId = id
	}
}

// Small views of the generated messages: only these fields are read.
type (
	idGetter      interface{ GetId() string }
	reasonGetter  interface{ GetReason() string }
	commentGetter interface{ GetComment() string }
	stageGetter   interface{ GetStage() string }
	nodeIDsGetter interface{ GetNodeIds() []string }
	rolloutGetter interface{ GetRollout() *outpostv1.Rollout }
)

// rolloutVerb describes Pause, Resume, Abort, Promote, Retry, Approve,
// Reject and Validate: the rollout by id, the reason or comment given,
// and the state after the call.
func rolloutVerb(req, resp proto.Message, e *outpostv1.AuditEntry) {
	if r, ok := req.(idGetter); ok {
		setRollout(e, r.GetId())
	}
	if r, ok := req.(reasonGetter); ok {
		detail(e, "reason", r.GetReason())
	}
	if r, ok := req.(commentGetter); ok {
		detail(e, "comment", r.GetComment())
	}
	if r, ok := req.(stageGetter); ok {
		detail(e, "stage", r.GetStage())
	}
	if r, ok := req.(nodeIDsGetter); ok {
		detail(e, "node_ids", strings.Join(r.GetNodeIds(), ","))
	}
	if r, ok := resp.(rolloutGetter); ok && r.GetRollout() != nil {
		detail(e, "state", stateName(r.GetRollout().GetState()))
	}
}

func createRollout(req, resp proto.Message, e *outpostv1.AuditEntry) {
	if r, ok := req.(*outpostv1.CreateRolloutRequest); ok {
		p := r.GetPlan()
		detail(e, "app", p.GetApp())
		detail(e, "environment", p.GetEnvironment())
		detail(e, "change_id", p.GetChangeId())
		detail(e, "artifact_sha256", r.GetArtifactSha256())
		if r.GetDryRun() {
			detail(e, "dry_run", "true")
		}
	}
	if r, ok := resp.(*outpostv1.CreateRolloutResponse); ok && r.GetRollout() != nil {
		ro := r.GetRollout()
		setRollout(e, ro.GetId())
		if ro.GetRevision() != 0 {
			detail(e, "revision", strconv.FormatInt(ro.GetRevision(), 10))
		}
		detail(e, "release", ro.GetReleaseId())
		detail(e, "state", stateName(ro.GetState()))
		artifactDetails(e, ro)
	}
}

// approveRollout describes an approval like the other verbs, plus what
// was approved: the artifact's digest and its verified signer, which a
// rollout never changes after creation.
func approveRollout(req, resp proto.Message, e *outpostv1.AuditEntry) {
	rolloutVerb(req, resp, e)
	if r, ok := resp.(rolloutGetter); ok && r.GetRollout() != nil {
		detail(e, "artifact_sha256", r.GetRollout().GetArtifact().GetSha256())
		artifactDetails(e, r.GetRollout())
	}
}

// artifactDetails records who signed a rollout's artifact: "signer" is
// the trusted key that verified it; "signed" says a bundle travels to the
// gateways even when the control plane verified none.
func artifactDetails(e *outpostv1.AuditEntry, ro *outpostv1.Rollout) {
	sig := ro.GetArtifact().GetSignature()
	if len(sig.GetBundle()) == 0 {
		return
	}
	detail(e, "signed", "true")
	detail(e, "signer", sig.GetSigner())
}

func applyNodes(req, resp proto.Message, e *outpostv1.AuditEntry) {
	r, ok := req.(*outpostv1.ApplyNodesRequest)
	if !ok {
		return
	}
	ids := make([]string, 0, len(r.GetNodes()))
	for _, n := range r.GetNodes() {
		ids = append(ids, n.GetId())
	}
	e.Resource = "nodes"
	if len(ids) == 1 {
		e.Resource = "nodes/" + ids[0]
		e.NodeId = ids[0]
	}
	detail(e, "node_ids", strings.Join(ids, ","))
	detail(e, "nodes", strconv.Itoa(len(ids)))
	if r, ok := resp.(*outpostv1.ApplyNodesResponse); ok && r != nil {
		detail(e, "created", strconv.Itoa(int(r.GetCreated())))
		detail(e, "updated", strconv.Itoa(int(r.GetUpdated())))
		detail(e, "unchanged", strconv.Itoa(int(r.GetUnchanged())))
	}
}

// nodeByID describes calls whose request names one node by id.
func nodeByID(req, _ proto.Message, e *outpostv1.AuditEntry) {
	if r, ok := req.(idGetter); ok && r.GetId() != "" {
		e.Resource = "nodes/" + r.GetId()
		e.NodeId = r.GetId()
	}
}

func verifyNodes(req, _ proto.Message, e *outpostv1.AuditEntry) {
	e.Resource = "nodes"
	if r, ok := req.(*outpostv1.VerifyNodesRequest); ok {
		detail(e, "label_selector", r.GetLabelSelector())
		detail(e, "datacenter", r.GetDatacenter())
	}
}

func trustHostKey(req, resp proto.Message, e *outpostv1.AuditEntry) {
	nodeByID(req, resp, e)
	if r, ok := req.(*outpostv1.TrustNodeHostKeyRequest); ok {
		// A public key's fingerprint; the detail name avoids "key" so it
		// is not redacted.
		detail(e, "fingerprint", r.GetFingerprint())
	}
}

func uploadArtifact(req, resp proto.Message, e *outpostv1.AuditEntry) {
	if r, ok := req.(*outpostv1.UploadArtifactRequest); ok && r.GetHeader() != nil {
		h := r.GetHeader()
		if h.GetSha256() != "" {
			e.Resource = "artifacts/" + h.GetSha256()
		}
		detail(e, "name", h.GetName())
		detail(e, "size", strconv.FormatInt(h.GetSize(), 10))
	}
	if r, ok := resp.(*outpostv1.UploadArtifactResponse); ok && r != nil && r.GetAlreadyPresent() {
		detail(e, "already_present", "true")
	}
}

// joinGateway names the gateway; the join token in the request is never
// read.
func joinGateway(req, resp proto.Message, e *outpostv1.AuditEntry) {
	if r, ok := req.(*outpostv1.JoinGatewayRequest); ok && r.GetName() != "" {
		e.Resource = "gateways/" + r.GetName()
	}
	if r, ok := resp.(*outpostv1.JoinGatewayResponse); ok && r != nil {
		detail(e, "datacenter", r.GetDatacenter())
	}
}

// renewGateway names the calling gateway: the request is only a CSR.
func renewGateway(_, _ proto.Message, e *outpostv1.AuditEntry) {
	if e.GetActorKind() == outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_GATEWAY && e.GetActor() != "" {
		e.Resource = "gateways/" + e.GetActor()
	}
}

func createJoinToken(req, resp proto.Message, e *outpostv1.AuditEntry) {
	if r, ok := req.(*outpostv1.CreateJoinTokenRequest); ok {
		detail(e, "datacenter", r.GetDatacenter())
		detail(e, "gateway_name", r.GetGatewayName())
	}
	// The id is public (a prefix of the secret's hash); the secret in the
	// response is never read.
	if r, ok := resp.(*outpostv1.CreateJoinTokenResponse); ok && r.GetJoinToken().GetId() != "" {
		e.Resource = "jointokens/" + r.GetJoinToken().GetId()
	}
}

func revokeJoinToken(req, _ proto.Message, e *outpostv1.AuditEntry) {
	if r, ok := req.(*outpostv1.RevokeJoinTokenRequest); ok && r.GetId() != "" {
		e.Resource = "jointokens/" + r.GetId()
	}
}

func createUser(req, resp proto.Message, e *outpostv1.AuditEntry) {
	if r, ok := req.(*outpostv1.CreateUserRequest); ok {
		if r.GetName() != "" {
			e.Resource = "users/" + r.GetName()
		}
		if r.GetRole() != outpostv1.Role_ROLE_UNSPECIFIED {
			detail(e, "granted_role", strings.ToLower(strings.TrimPrefix(r.GetRole().String(), "ROLE_")))
		}
	}
	if r, ok := resp.(*outpostv1.CreateUserResponse); ok {
		detail(e, "serial", r.GetCredential().GetSerial())
	}
}

func revokeCredential(req, resp proto.Message, e *outpostv1.AuditEntry) {
	r, ok := req.(*outpostv1.RevokeCredentialRequest)
	if !ok {
		return
	}
	switch {
	case r.GetSerial() != "":
		e.Resource = "credentials/" + r.GetSerial()
	case r.GetName() != "" && r.GetKind() == outpostv1.CredentialKind_CREDENTIAL_KIND_USER:
		e.Resource = "users/" + r.GetName()
	case r.GetName() != "" && r.GetKind() == outpostv1.CredentialKind_CREDENTIAL_KIND_GATEWAY:
		e.Resource = "gateways/" + r.GetName()
	}
	detail(e, "reason", r.GetReason())
	if r, ok := resp.(*outpostv1.RevokeCredentialResponse); ok && r != nil {
		serials := make([]string, 0, len(r.GetCredentials()))
		for _, c := range r.GetCredentials() {
			serials = append(serials, c.GetSerial())
		}
		detail(e, "serials", strings.Join(serials, ","))
	}
}

// stateName is a rollout state without its prefix ("RUNNING"); "" for
// UNSPECIFIED.
func stateName(s outpostv1.RolloutState) string {
	if s == outpostv1.RolloutState_ROLLOUT_STATE_UNSPECIFIED {
		return ""
	}
	return rolloutstate.Name(s)
}
