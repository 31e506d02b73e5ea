package controlplane

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// userClient creates user name with role through the admin and returns a
// client dialled with the new credential.
func userClient(t *testing.T, s *Server, name string, role pki.Role) *client {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".pem")
	cred, err := enroll.CreateUser(ctxT(t), dial(t, s.Addr()).AdminServiceClient, name, role, 0, path, s.Addr())
	if err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	conn, err := enroll.Dial(s.Addr(), cred)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{
		ControlPlaneServiceClient: outpostv1.NewControlPlaneServiceClient(conn),
		ArtifactServiceClient:     outpostv1.NewArtifactServiceClient(conn),
		AdminServiceClient:        outpostv1.NewAdminServiceClient(conn),
		conn:                      conn,
	}
}

func TestStartWritesAdminCredential(t *testing.T) {
	dir := t.TempDir()
	s := startCP(t, dir)
	path := filepath.Join(dir, "admin.pem")
	if s.AdminCredentialFile() != path {
		t.Errorf("AdminCredentialFile() = %q, want %q", s.AdminCredentialFile(), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("admin credential mode %v, want 0600", fi.Mode().Perm())
	}
	cred, err := pki.LoadCredential(path)
	if err != nil {
		t.Fatal(err)
	}
	want := pki.Identity{Kind: pki.KindUser, Name: "admin", Role: pki.RoleAdmin}
	if cred.Identity != want || cred.Server != s.Addr() {
		t.Errorf("admin credential is %v for %q, want %v for %q", cred.Identity, cred.Server, want, s.Addr())
	}
	for _, f := range []string{"pki/ca.crt", "pki/ca.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("CA file: %v", err)
		}
	}
}

func TestCallsWithoutCredentialAreUnauthenticated(t *testing.T) {
	s := startCP(t, t.TempDir())
	admin, err := pki.LoadCredential(s.AdminCredentialFile())
	if err != nil {
		t.Fatal(err)
	}
	// TLS that trusts the server but shows no client certificate.
	tlsCfg, err := pki.ClientTLSConfigForCA(admin.CAPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	anon, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	_, err = outpostv1.NewControlPlaneServiceClient(anon).ListNodes(ctxT(t), &outpostv1.ListNodesRequest{})
	wantCode(t, "ListNodes without a certificate", err, codes.Unauthenticated, "no client certificate")
	_, err = outpostv1.NewAdminServiceClient(anon).CreateJoinToken(ctxT(t), &outpostv1.CreateJoinTokenRequest{Datacenter: "dc1"})
	wantCode(t, "CreateJoinToken without a certificate", err, codes.Unauthenticated, "")

	// Plaintext does not even reach the API.
	plain, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := outpostv1.NewControlPlaneServiceClient(plain).ListNodes(ctx, &outpostv1.ListNodesRequest{}); err == nil {
		t.Error("ListNodes over plaintext succeeded")
	}
}

func TestRolesAreEnforced(t *testing.T) {
	s := startCP(t, t.TempDir())
	admin := dial(t, s.Addr())
	applyNodes(t, admin, 2, nil)
	digest := upload(t, admin, "app.tar.gz", []byte("app"))

	viewer := userClient(t, s, "vera", pki.RoleViewer)
	if _, err := viewer.ListNodes(ctxT(t), &outpostv1.ListNodesRequest{}); err != nil {
		t.Errorf("viewer ListNodes: %v", err)
	}
	_, err := viewer.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: rollingPlan("1", 0), ArtifactSha256: digest})
	wantCode(t, "viewer CreateRollout", err, codes.PermissionDenied, "requires role deployer")

	deployer := userClient(t, s, "dora", pki.RoleDeployer)
	if _, err := deployer.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: rollingPlan("1", 0), ArtifactSha256: digest, DryRun: true}); err != nil {
		t.Errorf("deployer CreateRollout (dry run): %v", err)
	}
	_, err = deployer.ApplyNodes(ctxT(t), &outpostv1.ApplyNodesRequest{Nodes: []*outpostv1.Node{{Id: "x", Address: "127.0.0.9:22", Datacenter: "dc1"}}})
	wantCode(t, "deployer ApplyNodes", err, codes.PermissionDenied, "requires role admin")
	_, err = deployer.CreateJoinToken(ctxT(t), &outpostv1.CreateJoinTokenRequest{Datacenter: "dc1"})
	wantCode(t, "deployer CreateJoinToken", err, codes.PermissionDenied, "requires role admin")
	_, err = deployer.TrustNodeHostKey(ctxT(t), &outpostv1.TrustNodeHostKeyRequest{Id: nodeID(0), Fingerprint: "SHA256:x"})
	wantCode(t, "deployer TrustNodeHostKey", err, codes.PermissionDenied, "requires role admin")

	// A person's certificate is not a gateway's.
	stream, err := deployer.conn.NewStream(ctxT(t), &outpostv1.GatewayService_ServiceDesc.Streams[0], outpostv1.GatewayService_Connect_FullMethodName)
	if err == nil {
		err = stream.RecvMsg(&outpostv1.ConnectResponse{})
	}
	wantCode(t, "user Connect", err, codes.PermissionDenied, "for gateways only")

	// Refused attempts are in the audit log too, with who tried and the
	// refusal: the audit interceptor runs before authorization.
	ac := outpostv1.NewAuditServiceClient(admin.conn)
	var got []string
	for range 100 {
		resp, err := ac.ListAuditEntries(ctxT(t), &outpostv1.ListAuditEntriesRequest{PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range resp.GetEntries() {
			got = append(got, e.GetAction()+" by "+e.GetActor()+": "+e.GetResult())
		}
		if slices.Contains(got, outpostv1.ControlPlaneService_CreateRollout_FullMethodName+" by vera: PERMISSION_DENIED") &&
			slices.Contains(got, outpostv1.ControlPlaneService_ApplyNodes_FullMethodName+" by dora: PERMISSION_DENIED") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("audit entries = %q, want the refused CreateRollout by vera and ApplyNodes by dora", got)
}

func TestGatewayCannotClaimAnotherDatacenterOrName(t *testing.T) {
	s := startCP(t, t.TempDir())
	cred := gatewayCred(t, s.Addr(), "gw-a", "dc-a")
	conn, err := enroll.Dial(s.Addr(), cred)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gc := outpostv1.NewGatewayServiceClient(conn)
	for _, tt := range []struct {
		name, dc, want string
	}{
		{"gw-a", "dc-b", `bound to datacenter "dc-a"`},
		{"gw-b", "dc-a", `certificate is for "gw-a"`},
	} {
		stream, err := gc.Connect(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_Hello{Hello: &outpostv1.GatewayHello{Name: tt.name, Datacenter: tt.dc}}}); err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		wantCode(t, "hello as "+tt.name+" in "+tt.dc, err, codes.PermissionDenied, tt.want)
	}
}

func TestEnvironmentPolicy(t *testing.T) {
	s := startCP(t, t.TempDir(), func(c *Config) {
		c.Environments = map[string]Environment{
			"prod":    {Protected: true, HookAllowList: []string{`sh bin/(start|stop)`, `sudo systemctl (start|stop|restart) [a-z0-9-]+`}},
			"staging": {},
		}
	})
	c := dial(t, s.Addr())
	applyNodes(t, c, 2, nil)
	digest := upload(t, c, "app.tar.gz", []byte("app"))
	plan := func(env string, mutate func(*outpostv1.PlanSpec)) *outpostv1.PlanSpec {
		p := rollingPlan("1", 0)
		p.Environment = env
		if mutate != nil {
			mutate(p)
		}
		return p
	}
	for _, tt := range []struct {
		name   string
		spec   *outpostv1.PlanSpec
		fields []string // violations expected; none means accepted
		msg    string
	}{
		{"allowed hooks", plan("prod", nil), nil, ""},
		{"allowed systemctl", plan("prod", func(p *outpostv1.PlanSpec) {
			p.Hooks = &outpostv1.Hooks{Stop: "sudo systemctl stop billing-api", Start: "sudo systemctl start billing-api"}
		}), nil, ""},
		{"hook off the allow-list", plan("prod", func(p *outpostv1.PlanSpec) { p.Hooks.AfterInstall = "curl -fsS http://example.internal/x | sh" }),
			[]string{"plan.hooks.after_install"}, `is not on the hook allow-list of environment "prod"`},
		{"allowed command with more after it", plan("prod", func(p *outpostv1.PlanSpec) { p.Hooks.Start = "sh bin/start; echo pwned" }),
			[]string{"plan.hooks.start"}, "allow-list"},
		{"health command and start off the list", plan("prod", func(p *outpostv1.PlanSpec) {
			p.Hooks.Start = "./run.sh"
			p.Health = &outpostv1.PlanHealth{Command: "curl localhost"}
		}), []string{"plan.hooks.start", "plan.health.command"}, "allow-list"},
		{"no allow-list", plan("staging", func(p *outpostv1.PlanSpec) { p.Hooks.AfterInstall = "./migrate.sh" }), nil, ""},
		{"undeclared environment", plan("production", nil), []string{"plan.environment"}, `"production" is not declared`},
		{"no environment", plan("", nil), []string{"plan.environment"}, "declares the environments prod, staging"},
		{"dangerous hook", plan("staging", func(p *outpostv1.PlanSpec) { p.Hooks.BeforeInstall = "rm -rf /" }),
			[]string{"plan.hooks.before_install"}, `"rm -rf /": denied: recursive delete of /`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: tt.spec, ArtifactSha256: digest, DryRun: true})
			if len(tt.fields) == 0 {
				if err != nil {
					t.Fatalf("CreateRollout: %v, want accepted", err)
				}
				return
			}
			wantCode(t, "CreateRollout", err, codes.InvalidArgument, tt.msg)
			var got []string
			for _, d := range status.Convert(err).Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						got = append(got, v.GetField())
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("violations on %v, want %v", got, tt.fields)
			}
		})
	}

	// A protected environment needs an approval even when the plan does
	// not ask for one.
	for env, want := range map[string]outpostv1.RolloutState{
		"prod":    outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL,
		"staging": outpostv1.RolloutState_ROLLOUT_STATE_APPROVED,
	} {
		p := plan(env, nil)
		p.App = "app-" + env
		resp, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: p, ArtifactSha256: digest, DryRun: true})
		if err != nil || resp.GetRollout().GetState() != want {
			t.Errorf("rollout in %s: %v (%v), want %v", env, resp.GetRollout().GetState(), err, want)
		}
	}
}

// TestStartWarnsOfProtectedEnvironmentWithoutAllowList: the deny list is
// a seat belt; a protected environment whose hooks pass only it is
// named in a warning at start.
func TestStartWarnsOfProtectedEnvironmentWithoutAllowList(t *testing.T) {
	logs := &recordingHandler{}
	startCP(t, t.TempDir(), withLogger(slog.New(logs)), func(c *Config) {
		c.Environments = map[string]Environment{
			"prod":     {Protected: true},
			"payments": {Protected: true, HookAllowList: []string{`sh bin/(start|stop)`}},
			"staging":  {},
			"dr":       {Protected: true, ApprovalTTL: time.Hour},
		}
	})
	var warned []string
	for _, r := range logs.all() {
		if env, ok := r.attrs["environment"]; ok && r.level == slog.LevelWarn && strings.Contains(r.msg, "no hook allow-list") {
			warned = append(warned, env)
		}
	}
	if want := []string{"dr", "prod"}; strings.Join(warned, ",") != strings.Join(want, ",") {
		t.Errorf("warned of environments %v, want %v", warned, want)
	}
}

// recordingHandler keeps every log record's level, message and
// attributes (and forwards nothing).
type recordingHandler struct {
	mu      sync.Mutex
	records []loggedRecord
}

type loggedRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	rec := loggedRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, rec)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) all() []loggedRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]loggedRecord(nil), h.records...)
}

// TestEnvironmentDeployPathPrefixes checks issue #11's allow-list: an
// environment with deploy_path_prefixes refuses a rollout (and its dry
// run) whose deploy path is not under one of them, naming
// plan.deploy.path; the deny list of system and home directories applies
// in every environment.
func TestEnvironmentDeployPathPrefixes(t *testing.T) {
	s := startCP(t, t.TempDir(), func(c *Config) {
		c.Environments = map[string]Environment{
			"prod":    {DeployPathPrefixes: []string{"/srv", "/opt/apps/"}, HookAllowList: []string{`sh bin/(start|stop)`}},
			"staging": {},
		}
	})
	c := dial(t, s.Addr())
	applyNodes(t, c, 2, nil)
	digest := upload(t, c, "app.tar.gz", []byte("app"))
	for _, tt := range []struct {
		name, env, path string
		hook            string   // a start hook; "" keeps the plan's
		fields          []string // violations expected; none means accepted
		msg             string
	}{
		{"under a prefix", "prod", "/srv/billing-api", "", nil, ""},
		{"under the other prefix", "prod", "/opt/apps/billing/", "", nil, ""},
		{"outside", "prod", "/var/www/billing", "", []string{"plan.deploy.path"},
			`"/var/www/billing" is not under the deploy path prefixes of environment "prod" (/srv, /opt/apps)`},
		{"a sibling that shares the prefix's letters", "prod", "/srvx/billing", "", []string{"plan.deploy.path"}, "is not under the deploy path prefixes"},
		{"a parent of a prefix", "prod", "/opt/app", "", []string{"plan.deploy.path"}, "is not under the deploy path prefixes"},
		{"out by ..", "prod", "/srv/../home/deploy/app", "", []string{"plan.deploy.path"}, "is not under the deploy path prefixes"},
		{"relative to the home", "prod", "app", "", []string{"plan.deploy.path"},
			`"app" is relative to the SSH user's home: environment "prod" allows only absolute deploy paths under /srv, /opt/apps`},
		{"outside, and a hook off the list", "prod", "/home/deploy/app", "./run.sh", []string{"plan.deploy.path", "plan.hooks.start"}, "allow-list"},
		{"a prefix itself is still a system directory", "prod", "/srv", "", []string{"plan.deploy.path"}, "must not be /srv"},
		{"no prefixes", "staging", "/home/deploy/app", "", nil, ""},
		{"a home directory in any environment", "staging", "/home/deploy", "", []string{"plan.deploy.path"}, "must not be a directory directly in /home"},
		{"a system directory in any environment", "staging", "/var/lib", "", []string{"plan.deploy.path"}, "must not be a directory directly in /var"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := rollingPlan("1", 0)
			p.Environment = tt.env
			p.Deploy.Path = tt.path
			if tt.hook != "" {
				p.Hooks.Start = tt.hook
			}
			_, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: p, ArtifactSha256: digest, DryRun: true})
			if len(tt.fields) == 0 {
				if err != nil {
					t.Fatalf("CreateRollout: %v, want accepted", err)
				}
				return
			}
			wantCode(t, "CreateRollout", err, codes.InvalidArgument, tt.msg)
			var got []string
			for _, d := range status.Convert(err).Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						got = append(got, v.GetField())
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("violations on %v, want %v", got, tt.fields)
			}
		})
	}
	// The dry runs stored nothing; a real rollout outside the prefixes is
	// refused the same way.
	p := rollingPlan("1", 0)
	p.Environment, p.Deploy.Path = "prod", "/home/deploy/app"
	_, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: p, ArtifactSha256: digest})
	wantCode(t, "CreateRollout", err, codes.InvalidArgument, "is not under the deploy path prefixes")
	resp, err := c.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetRollouts()); n != 0 {
		t.Errorf("%d rollouts stored, want none", n)
	}
}

func TestStartRefusesBadEnvironments(t *testing.T) {
	for _, tt := range []struct {
		name string
		envs map[string]Environment
		want string
	}{
		{"bad pattern", map[string]Environment{"prod": {HookAllowList: []string{"sh ("}}}, "environments.prod.hook_allow_list[0]"},
		{"bad name", map[string]Environment{"Prod": {}}, `"Prod"`},
		{"ttl unprotected", map[string]Environment{"prod": {ApprovalTTL: time.Hour}}, "not protected"},
		{"relative prefix", map[string]Environment{"prod": {DeployPathPrefixes: []string{"srv"}}}, `environments.prod.deploy_path_prefixes[0]: "srv": must be an absolute path`},
		{"empty prefix", map[string]Environment{"prod": {DeployPathPrefixes: []string{"/srv", ""}}}, "environments.prod.deploy_path_prefixes[1]: empty prefix"},
		{"root prefix", map[string]Environment{"prod": {DeployPathPrefixes: []string{"//"}}}, "allows every path"},
		{"dotdot prefix", map[string]Environment{"prod": {DeployPathPrefixes: []string{"/srv/../etc"}}}, "must not contain '..'"},
		{"huge prefix", map[string]Environment{"prod": {DeployPathPrefixes: []string{"/" + strings.Repeat("a", 5000)}}}, "5001 bytes long"},
		{"newline prefix", map[string]Environment{"prod": {DeployPathPrefixes: []string{"/srv\n/etc"}}}, "control characters"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Start(ctxT(t), Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Environments: tt.envs, Logger: testLogger()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestParseFileConfig(t *testing.T) {
	fc, err := ParseFileConfig([]byte(`environments:
  prod:
    protected: true
    approval_ttl: 24h
    hook_allow_list: ["sudo systemctl (start|stop|restart) [a-z0-9-]+"]
    deploy_path_prefixes: [/srv, /opt/apps]
  staging: {}
  dev:
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Environment{
		"prod": {Protected: true, ApprovalTTL: 24 * time.Hour, HookAllowList: []string{"sudo systemctl (start|stop|restart) [a-z0-9-]+"},
			DeployPathPrefixes: []string{"/srv", "/opt/apps"}},
		"staging": {},
		"dev":     {},
	}
	if len(fc.Environments) != len(want) {
		t.Fatalf("environments %v, want %v", fc.Environments, want)
	}
	for name, w := range want {
		g := fc.Environments[name]
		if g.Protected != w.Protected || g.ApprovalTTL != w.ApprovalTTL || strings.Join(g.HookAllowList, "|") != strings.Join(w.HookAllowList, "|") ||
			strings.Join(g.DeployPathPrefixes, "|") != strings.Join(w.DeployPathPrefixes, "|") {
			t.Errorf("environment %s = %+v, want %+v", name, g, w)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"environments: {prod: {protected: yes-please}}", "protected"},
		{"environments: {prod: {approval_ttl: soon, protected: true}}", "environments.prod.approval_ttl"},
		{"environments: {prod: {hook_allowlist: []}}", "hook_allowlist"},
		{"environment: {}", "environment"},
		{"environments: {prod: {hook_allow_list: ['(']}}", "hook_allow_list[0]"},
		{"environments: {prod: {deploy_path_prefixes: [srv]}}", "environments.prod.deploy_path_prefixes[0]"},
		{"environments: {prod: {deploy_path_prefixes: /srv}}", "deploy_path_prefixes"},
	} {
		if _, err := ParseFileConfig([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseFileConfig(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

// scanGateway answers host key scans on a ServeHostKeyScans stream with
// key, as a gateway that dialled the node would.
func scanGateway(t *testing.T, s *Server, name, dc string, key ssh.PublicKey) (scans chan *outpostv1.ServeHostKeyScansResponse) {
	t.Helper()
	scans = make(chan *outpostv1.ServeHostKeyScansResponse, 10)
	serveScans(t, s, name, dc, func(stream gatewayScanStream) {
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			scans <- req
			stream.Send(&outpostv1.ServeHostKeyScansRequest{ScanId: req.GetScanId(), AuthorizedKey: string(ssh.MarshalAuthorizedKey(key))})
		}
	})
	return scans
}

// gatewayScanStream is a gateway's end of ServeHostKeyScans.
type gatewayScanStream = grpc.BidiStreamingClient[outpostv1.ServeHostKeyScansRequest, outpostv1.ServeHostKeyScansResponse]

// serveScans opens gateway name's (of dc) scan stream to s and runs serve
// on it until the stream ends; the stream ends with the test.
func serveScans(t *testing.T, s *Server, name, dc string, serve func(gatewayScanStream)) {
	t.Helper()
	conn, err := enroll.Dial(s.Addr(), gatewayCred(t, s.Addr(), name, dc))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := outpostv1.NewGatewayServiceClient(conn).ServeHostKeyScans(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(stream)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
}

func newHostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// scanNode calls ScanNodeHostKey until a gateway stream is registered
// (bounded), and returns the first real answer.
func scanNode(t *testing.T, c *client, id string) (*outpostv1.NodeHostKeyScan, error) {
	t.Helper()
	var err error
	for range 100 {
		var resp *outpostv1.ScanNodeHostKeyResponse
		resp, err = c.ScanNodeHostKey(ctxT(t), &outpostv1.ScanNodeHostKeyRequest{Id: id})
		if status.Code(err) != codes.Unavailable {
			return resp.GetScan(), err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

func TestScanAndTrustHostKey(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 2, func(i int) string { return []string{"dc-a", "dc-b"}[i] })
	keyA, keyB := newHostKey(t), newHostKey(t)
	scansA := scanGateway(t, s, "gw-a", "dc-a", keyA)
	scansB := scanGateway(t, s, "gw-b", "dc-b", keyB)

	// Trusting before any scan pins nothing.
	_, err := c.TrustNodeHostKey(ctxT(t), &outpostv1.TrustNodeHostKeyRequest{Id: nodeID(0), Fingerprint: ssh.FingerprintSHA256(keyA)})
	wantCode(t, "trust before a scan", err, codes.FailedPrecondition, "no host key scan")

	scan, err := scanNode(t, c, nodeID(0))
	if err != nil {
		t.Fatalf("ScanNodeHostKey: %v", err)
	}
	if scan.GetGateway() != "gw-a" || scan.GetFingerprint() != ssh.FingerprintSHA256(keyA) || scan.GetKeyType() != "ssh-ed25519" || scan.GetPinned() {
		t.Errorf("scan = %v, want gw-a's answer with %s, not pinned", scan, ssh.FingerprintSHA256(keyA))
	}
	select {
	case req := <-scansA:
		if req.GetNode().GetId() != nodeID(0) {
			t.Errorf("gw-a was asked to scan %s", req.GetNode().GetId())
		}
	default:
		t.Error("gw-a got no scan request")
	}
	if len(scansB) != 0 {
		t.Errorf("gw-b of dc-b was asked to scan a node of dc-a")
	}

	// A wrong fingerprint pins nothing.
	_, err = c.TrustNodeHostKey(ctxT(t), &outpostv1.TrustNodeHostKeyRequest{Id: nodeID(0), Fingerprint: ssh.FingerprintSHA256(keyB)})
	wantCode(t, "trust with the wrong fingerprint", err, codes.FailedPrecondition, "does not match")
	if !hasReason(err, ReasonHostKeyMismatch) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(keyB)) {
		t.Errorf("trust with the wrong fingerprint: %v; want reason %s and both fingerprints", err, ReasonHostKeyMismatch)
	}
	_, err = c.TrustNodeHostKey(ctxT(t), &outpostv1.TrustNodeHostKeyRequest{Id: nodeID(0)})
	wantCode(t, "trust without a fingerprint", err, codes.InvalidArgument, "fingerprint")
	got, err := c.GetNode(ctxT(t), &outpostv1.GetNodeRequest{Id: nodeID(0)})
	if err != nil || len(got.GetNode().GetHostKeys()) != 0 {
		t.Fatalf("node after refused trusts: %v, %v; want no host keys", got, err)
	}

	resp, err := c.TrustNodeHostKey(ctxT(t), &outpostv1.TrustNodeHostKeyRequest{Id: nodeID(0), Fingerprint: ssh.FingerprintSHA256(keyA)})
	if err != nil {
		t.Fatalf("TrustNodeHostKey: %v", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(keyA)))
	if keys := resp.GetNode().GetHostKeys(); len(keys) != 1 || keys[0] != line {
		t.Errorf("host keys %q, want [%q]", keys, line)
	}
	got, err = c.GetNode(ctxT(t), &outpostv1.GetNodeRequest{Id: nodeID(0)})
	if err != nil || len(got.GetNode().GetHostKeys()) != 1 {
		t.Errorf("stored node %v, %v; want the pinned key", got, err)
	}
	// Trusting again changes nothing; a new scan says the key is pinned.
	if _, err := c.TrustNodeHostKey(ctxT(t), &outpostv1.TrustNodeHostKeyRequest{Id: nodeID(0), Fingerprint: ssh.FingerprintSHA256(keyA)}); err != nil {
		t.Errorf("second TrustNodeHostKey: %v", err)
	}
	if scan, err := scanNode(t, c, nodeID(0)); err != nil || !scan.GetPinned() {
		t.Errorf("scan after trust: %v, %v; want pinned", scan, err)
	}

	// Applying the inventory again (which knows no host keys) keeps the
	// pinned key; moving the node drops it.
	applyNodes(t, c, 3, func(i int) string { return []string{"dc-a", "dc-b", "dc-c"}[i] })
	if got, err := c.GetNode(ctxT(t), &outpostv1.GetNodeRequest{Id: nodeID(0)}); err != nil || len(got.GetNode().GetHostKeys()) != 1 {
		t.Errorf("node after applying the inventory again: %v, %v; want the pinned key kept", got, err)
	}
	moved := proto.CloneOf(got.GetNode())
	moved.HostKeys, moved.Address = nil, "127.0.99.1:22"
	if _, err := c.ApplyNodes(ctxT(t), &outpostv1.ApplyNodesRequest{Nodes: []*outpostv1.Node{moved}}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetNode(ctxT(t), &outpostv1.GetNodeRequest{Id: nodeID(0)}); err != nil || len(got.GetNode().GetHostKeys()) != 0 {
		t.Errorf("node after moving it: %v, %v; want no pinned key", got, err)
	}

	// A node whose datacenter has no gateway cannot be scanned.
	_, err = c.ScanNodeHostKey(ctxT(t), &outpostv1.ScanNodeHostKeyRequest{Id: nodeID(2)})
	wantCode(t, "scan in dc-c", err, codes.Unavailable, "no gateway of datacenter dc-c")
	_, err = c.ScanNodeHostKey(ctxT(t), &outpostv1.ScanNodeHostKeyRequest{Id: "nope"})
	wantCode(t, "scan of an unknown node", err, codes.NotFound, "nope")
}

func TestAuditRecordsCallsNodesAndStates(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 2, nil)
	digest := upload(t, c, "app.tar.gz", []byte("app"))
	gw := newFakeGateway(t, "gw-dc1", "dc1", 10)
	gw.auto = succeedAll
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, rollingPlan("2", 0), digest)
	waitRollout(t, c, r.GetId(), "success", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))

	ac := outpostv1.NewAuditServiceClient(c.conn)
	want := map[string]bool{
		outpostv1.ControlPlaneService_CreateRollout_FullMethodName + " by admin": false,
		"rollout.state by cp-test": false,
		"node.result by gw-dc1":    false,
	}
	var last []string
	for range 100 {
		resp, err := ac.ListAuditEntries(ctxT(t), &outpostv1.ListAuditEntriesRequest{RolloutId: r.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		last = last[:0]
		for _, e := range resp.GetEntries() {
			k := e.GetAction() + " by " + e.GetActor()
			last = append(last, k)
			if _, ok := want[k]; ok {
				want[k] = true
			}
		}
		if want[outpostv1.ControlPlaneService_CreateRollout_FullMethodName+" by admin"] && want["rollout.state by cp-test"] && want["node.result by gw-dc1"] {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("audit entries of %s: %q; want %v", r.GetId(), last, want)
}

func TestExpiredAndRevokedCertificatesAreRefused(t *testing.T) {
	dir := t.TempDir()
	s := startCP(t, dir)
	c := dial(t, s.Addr())

	// An expired certificate of this very CA fails the TLS handshake.
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	// Issued four minutes ago for one minute (the CA itself is only a few
	// minutes old: its certificate is backdated five).
	ca.Now = func() time.Time { return time.Now().Add(-4 * time.Minute) }
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.IssueClient(pki.Identity{Kind: pki.KindUser, Name: "old", Role: pki.RoleAdmin}, key.Public(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := pki.NewCredential(ca.CertPEM(), certPEM, key, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := enroll.Dial(s.Addr(), expired)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = outpostv1.NewControlPlaneServiceClient(conn).ListNodes(ctxT(t), &outpostv1.ListNodesRequest{})
	// TLS 1.3 refuses it after the client's half of the handshake: the
	// client sees the alert or a broken pipe, depending on timing.
	wantCode(t, "ListNodes with an expired certificate", err, codes.Unavailable, "")

	// A revoked gateway certificate can no longer connect or renew.
	gwCred := gatewayCred(t, s.Addr(), "gw-x", "dc1")
	gconn, err := enroll.Dial(s.Addr(), gwCred)
	if err != nil {
		t.Fatal(err)
	}
	defer gconn.Close()
	gc := outpostv1.NewGatewayServiceClient(gconn)
	if _, err := enroll.Renew(ctxT(t), gc, s.Addr()); err != nil {
		t.Fatalf("renew before revocation: %v", err)
	}
	if _, err := c.RevokeCredential(ctxT(t), &outpostv1.RevokeCredentialRequest{Kind: outpostv1.CredentialKind_CREDENTIAL_KIND_GATEWAY, Name: "gw-x"}); err != nil {
		t.Fatal(err)
	}
	_, err = enroll.Renew(ctxT(t), gc, s.Addr())
	wantCode(t, "renew after revocation", innerStatusErr(err), codes.Unauthenticated, "revoked")
}

// innerStatusErr unwraps err to the gRPC status error it carries.
func innerStatusErr(err error) error {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.(error)
	}
	return err
}

// hasReason reports whether err's status carries ErrorInfo with reason.
func hasReason(err error, reason string) bool {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == reason {
			return true
		}
	}
	return false
}
