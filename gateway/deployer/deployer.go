package deployer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/shell"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Remote is the connection to one node that the deployer needs.
type Remote interface {
	// Run runs cmd through the login shell; the error is for transport
	// failures only, a failed command is in the Result.
	Run(ctx context.Context, cmd string) (sshexec.Result, error)
	// Upload writes src to remotePath (whose directory exists) with mode.
	Upload(ctx context.Context, src io.Reader, remotePath string, mode fs.FileMode) (sshexec.UploadResult, error)
	// Home is the SFTP server's start directory (the login's home unless
	// sshd says otherwise, as internal-sftp -d or a chroot do), against
	// which relative deploy paths resolve (ResolvePath).
	Home(ctx context.Context) (string, error)
	Close() error
}

var _ Remote = (*sshexec.Client)(nil)

// Defaults applied by Config.CheckAndSetDefaults.
const (
	DefaultStaleLockAge   = time.Hour
	DefaultCleanupTimeout = 30 * time.Second
	// DefaultHealthAttemptTimeout bounds one HTTP or TCP health attempt.
	DefaultHealthAttemptTimeout = 5 * time.Second
)

// Config configures a Deployer.
type Config struct {
	// Dial connects to a node, verifying its host key and authenticating
	// with the gateway's credentials. Required. It is called once per
	// deployment, and once more when the connection drops and the node
	// must be cleaned up or rolled back.
	Dial func(ctx context.Context, node *outpostv1.Node) (Remote, error)
	// HTTP runs HTTP health checks. Nil means a client that ignores proxy
	// settings, keeps no idle connections and gives up on one attempt after
	// DefaultHealthAttemptTimeout.
	HTTP *http.Client
	// Now is the clock for events and lock times; nil means time.Now.
	Now func() time.Time
	// Logger receives step logs; nil discards them.
	Logger *slog.Logger
	// Tracer makes one span per node deployment and one per step; nil
	// means no tracing.
	Tracer trace.Tracer
	// StaleLockAge is the age past which a lock that blocks a deployment
	// is reported as stale (never broken); zero means DefaultStaleLockAge.
	StaleLockAge time.Duration
	// CleanupTimeout bounds reconnecting, cleaning up and unlocking after a
	// failure or cancellation, which run on a fresh context; a rollback gets
	// this plus the health timeout. Zero means DefaultCleanupTimeout.
	CleanupTimeout time.Duration
	// OnUpload is told of every artifact upload: mode UploadDelta or
	// UploadFull and the bytes sent; rebuildFailed (with mode UploadDelta
	// and no bytes) of a delta that did not rebuild the artifact on the
	// node, after which the full artifact is sent. Nil ignores them.
	OnUpload func(mode string, bytes int64, rebuildFailed bool)
}

// CheckAndSetDefaults validates c and fills in its defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Dial == nil {
		return errors.New("deployer: Config.Dial is required")
	}
	if c.StaleLockAge < 0 || c.CleanupTimeout < 0 {
		return errors.New("deployer: negative StaleLockAge or CleanupTimeout")
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{
			Timeout: DefaultHealthAttemptTimeout,
			Transport: &http.Transport{
				// Health checks go to the node itself, never through a proxy.
				Proxy:             nil,
				DialContext:       (&net.Dialer{Timeout: DefaultHealthAttemptTimeout}).DialContext,
				DisableKeepAlives: true,
			},
			// A redirect is an answer; its status is what is checked.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Tracer == nil {
		c.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if c.StaleLockAge == 0 {
		c.StaleLockAge = DefaultStaleLockAge
	}
	if c.CleanupTimeout == 0 {
		c.CleanupTimeout = DefaultCleanupTimeout
	}
	return nil
}

// Deployer deploys releases to nodes. Deploy may be called concurrently,
// for different nodes or the same one (the node's lock decides).
type Deployer struct {
	cfg    Config
	scans  artifactScans
	deltas deltaCache
}

// New returns a Deployer for cfg.
func New(cfg Config) (*Deployer, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Deployer{cfg: cfg}, nil
}

// Close stops the deployer's background work (the block signatures it
// computes ahead for the next rollout's delta) and waits for it. Calls
// that follow still work; they compute a signature when they need it.
func (d *Deployer) Close() {
	d.deltas.stop()
}

// Job is one release to deploy to one node.
type Job struct {
	// Node is the target; its Address's host is also where HTTP and TCP
	// health checks go.
	Node *outpostv1.Node
	// Release is what to deploy: its id names the release directory, its
	// artifact's sha256 is verified on the node.
	Release *outpostv1.Release
	// ArtifactPath is the artifact file on the gateway.
	ArtifactPath string
	// Spec says where and how; its defaults are applied by Deploy.
	Spec Spec
	// RolloutID and Owner (the lock owner, such as the gateway's name) are
	// required; Epoch is the issuing leader's epoch. All three go into the
	// node's lock and history.
	RolloutID string
	Owner     string
	Epoch     int64
	// AssignmentID identifies this deployment in the node's lock, so that
	// the control plane can later name the lock an assignment may take
	// over; "" records none.
	AssignmentID string
	// TakeoverLockOf is the assignment whose lock on the node this
	// deployment may break (Assignment.takeover_lock_of): the control plane
	// gave up on that deployment because its gateway went away. Only a lock
	// recording exactly that assignment of this rollout, from this epoch or
	// an older one, is broken, and only while no activation of it runs on
	// the node. "" never breaks a lock.
	TakeoverLockOf string
	// Base returns the gateway's copy of the artifact with the given
	// SHA-256, if it has one, without fetching it: the node's current
	// artifact, against which only a delta is sent (deltaupload.go). Nil
	// always sends the full artifact.
	Base func(sha256 string) (path string, ok bool)
}

// Result is how a deployment ended.
type Result struct {
	// State is SUCCEEDED, FAILED (the node is as it was), ROLLED_BACK (the
	// previous release is current and healthy) or ROLLBACK_FAILED.
	State outpostv1.NodeState
	// Step is the step that failed: the first failure for FAILED and
	// ROLLED_BACK, STEP_ROLLBACK for ROLLBACK_FAILED; STEP_UNLOCK for a
	// success.
	Step outpostv1.Step
	// Err says what went wrong; nil exactly when State is SUCCEEDED. It
	// also tells when the node could not be cleaned up.
	Err error
	// Release is the release current on the node now, as far as the
	// deployer knows; Previous the one current before; "" for none.
	Release, Previous string
}

// releaseIDPattern is what a release directory may be called.
var releaseIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// validReleaseID reports whether id may name a release directory.
func validReleaseID(id string) bool {
	return len(id) <= 200 && releaseIDPattern.MatchString(id) && !strings.HasSuffix(id, ".partial")
}

// deployment is the state of one Deploy call.
type deployment struct {
	d    *Deployer
	job  Job
	spec Spec // job.Spec with defaults
	art  artifactInfo
	rep  *reporter
	log  *slog.Logger

	remote   Remote // nil until connected
	broken   bool   // the connection failed under a live ctx; the next command reconnects
	redialed bool   // the one reconnection was used

	dir         string // absolute deploy path on the node
	lockContent string
	progress    progress // how far we got on the node; moved by advance only
	tookOver    string   // the assignment whose lock we broke; "" when none
	heldRaw     string   // the content of the lock another deployment held, as read
	// restoredSwitch names the backup a takeover moved back into place
	// after the holder's in-place switch was interrupted; "" when none.
	restoredSwitch string
	facts          nodeFacts // from the lock script
	// created reports that we created releases/<id>.partial, and so own
	// releases/<id>: not how far we got but what is ours to remove.
	created    bool
	sentSHA256 string // digest of the bytes the upload sent, computed while sending
	// rebuiltOK: a delta upload rebuilt the artifact and its script found
	// the expected SHA-256 (deltaupload.go); the verify step reports that
	// check instead of reading the file again.
	rebuiltOK bool
}

// Deploy deploys job and returns how it ended. emit (may be nil) receives
// every step event, in order, from Deploy's goroutine.
//
// When ctx ends, the step under way is abandoned and the node is cleaned
// up (or rolled back, past the stop) and unlocked under a fresh context
// bounded by Config.CleanupTimeout: a cancelled deployment never leaves a
// lock or a partial release behind when the node can still be reached.
func (d *Deployer) Deploy(ctx context.Context, job Job, emit func(*outpostv1.NodeStepEvent)) Result {
	if emit == nil {
		emit = func(*outpostv1.NodeStepEvent) {}
	}
	log := d.cfg.Logger.With("node_id", job.Node.GetId(), "rollout_id", job.RolloutID, "release", job.Release.GetId()).With(telemetry.LogArgs(ctx)...)
	ctx, span := d.cfg.Tracer.Start(ctx, "deployer.deploy", trace.WithAttributes(
		jobAttrs(job)...))
	defer span.End()
	dep := &deployment{
		d:   d,
		job: job,
		log: log,
		rep: &reporter{
			nodeID: job.Node.GetId(), rolloutID: job.RolloutID, address: job.Node.GetAddress(),
			emit: emit, tracer: d.cfg.Tracer, log: log, now: d.cfg.Now,
		},
	}
	res := dep.run(ctx)
	span.SetAttributes(telemetry.AttrNodeState.String(telemetry.NodeStateValue(res.State)))
	switch {
	case res.State == outpostv1.NodeState_NODE_STATE_SUCCEEDED:
		log.Info("node deployed", "previous", res.Previous)
	case res.State == outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
		telemetry.Fail(span, res.Err)
		log.Error("ROLLBACK FAILED: node needs attention", "step", stepName(res.Step), "error", res.Err, "current", res.Release)
	default:
		telemetry.Fail(span, res.Err)
		log.Warn("node deployment failed", "state", res.State.String(), "step", stepName(res.Step), "error", res.Err)
	}
	return res
}

// run walks the steps. Each failure hands over to abandon (before the
// stop hook) or rollback (after it), both in rollback.go.
func (dep *deployment) run(ctx context.Context) Result {
	if err := dep.connect(ctx); err != nil {
		return dep.result(outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.Step_STEP_CONNECT, err)
	}
	defer func() { dep.remote.Close() }() // the remote may be replaced by a reconnect
	if dep.spec.Layout == LayoutInplace {
		return dep.runInplace(ctx)
	}
	if err := dep.lock(ctx); err != nil {
		return dep.abandon(ctx, outpostv1.Step_STEP_LOCK, err)
	}
	if err := dep.precheck(ctx); err != nil {
		return dep.abandon(ctx, outpostv1.Step_STEP_PRECHECK, err)
	}
	if err := dep.upload(ctx); err != nil {
		return dep.abandon(ctx, outpostv1.Step_STEP_UPLOAD, err)
	}
	// A ctx that ended during the upload must not start the activation,
	// whose interruption would cost the service a restart.
	if err := ctx.Err(); err != nil {
		return dep.abandon(ctx, outpostv1.Step_STEP_VERIFY, fmt.Errorf("before verify: %w", err))
	}
	if step, err := dep.activate(ctx); err != nil {
		if dep.progress.disturbed() {
			return dep.rollback(ctx, step, err)
		}
		return dep.abandon(ctx, step, err)
	}
	if err := dep.health(ctx); err != nil {
		return dep.rollback(ctx, outpostv1.Step_STEP_HEALTH, err)
	}
	return dep.finish(ctx)
}

// previousID names the release current before this deployment: its id,
// or the raw symlink target when that is not releases/<id>; "" for none.
func (dep *deployment) previousID() string {
	if id := releaseOf(dep.facts.current); id != "" {
		return id
	}
	return dep.facts.current
}

// result builds a Result; Release and Previous follow what the node holds.
func (dep *deployment) result(state outpostv1.NodeState, step outpostv1.Step, err error) Result {
	prev := dep.previousID()
	res := Result{State: state, Step: step, Err: err, Previous: prev, Release: prev}
	if state == outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		res.Release = dep.job.Release.GetId()
	}
	return res
}

// connect validates the job, dials the node and resolves the deploy path.
// A job that fails validation never reaches Dial.
func (dep *deployment) connect(ctx context.Context) error {
	s := dep.rep.begin(outpostv1.Step_STEP_CONNECT)
	err := dep.connectRun(ctx)
	detail := ""
	if err == nil {
		detail = dep.job.Node.GetUser() + "@" + dep.job.Node.GetAddress() + ":" + dep.dir
	}
	dep.rep.end(ctx, s, err, detail)
	return err
}

func (dep *deployment) connectRun(ctx context.Context) error {
	if err := dep.validate(); err != nil {
		return err
	}
	r, err := dep.d.cfg.Dial(ctx, dep.job.Node)
	if err == nil && r == nil {
		err = errors.New("Config.Dial returned no connection")
	}
	if err != nil {
		return fmt.Errorf("connect %s: %w", dep.job.Node.GetAddress(), err)
	}
	if dep.dir, err = ResolvePath(ctx, r, dep.spec.Path); err != nil {
		r.Close()
		return err
	}
	dep.remote = r
	dep.lockContent = lockContentFor(LockInfo{
		Owner: dep.job.Owner, Rollout: dep.job.RolloutID, Release: dep.job.Release.GetId(),
		Epoch: dep.job.Epoch, Time: dep.d.cfg.Now().UTC().Truncate(time.Millisecond),
		Assignment: dep.job.AssignmentID,
	})
	return nil
}

// validate checks everything about the job that needs no node, including
// the artifact file, and applies the spec's defaults.
func (dep *deployment) validate() error {
	j := dep.job
	if err := dep.validateIdentity(); err != nil {
		return err
	}
	invalid := invalidJob
	a := j.Release.GetArtifact()
	if len(a.GetSha256()) != 64 || strings.ToLower(a.GetSha256()) != a.GetSha256() {
		return invalid("artifact sha256 %q is not 64 lower-case hex digits", a.GetSha256())
	}
	if _, err := hex.DecodeString(a.GetSha256()); err != nil {
		return invalid("artifact sha256 %q is not 64 lower-case hex digits", a.GetSha256())
	}
	switch a.GetUnpack() {
	case outpostv1.Unpack_UNPACK_TAR:
	case outpostv1.Unpack_UNPACK_NONE:
		if n := a.GetName(); !validFileName(n) {
			return invalid("artifact name %q must be a plain file name to place in the release directory", n)
		}
	default:
		return invalid("artifact unpack %v must be TAR or NONE", a.GetUnpack())
	}
	if j.ArtifactPath == "" {
		return invalid("artifact path is required")
	}
	dep.spec = j.Spec
	if err := dep.spec.CheckAndSetDefaults(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidJob, err)
	}
	info, err := dep.d.scans.inspect(j.ArtifactPath, a, dep.spec.TarLimits)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidJob, err)
	}
	dep.art = info
	return nil
}

// validFileName reports whether n can be placed as one file in a release
// directory without clashing with the deployer's own names.
func validFileName(n string) bool {
	return n != "" && n != "." && n != ".." && len(n) <= 255 && !strings.ContainsAny(n, "/\x00\n\r") &&
		n != artifactFile && n != digestFile && n != deltaFile && shell.CheckArg(n) == nil
}

// exec runs cmd on the node, reconnecting first when an earlier command
// lost the connection. A transport failure under a live ctx marks the
// connection broken; one cancelled by ctx does not (sshexec keeps the
// connection usable).
func (dep *deployment) exec(ctx context.Context, cmd string) (sshexec.Result, error) {
	if dep.broken {
		if err := dep.reconnect(ctx); err != nil {
			return sshexec.Result{}, err
		}
	}
	res, err := dep.remote.Run(ctx, cmd)
	if err != nil && ctx.Err() == nil {
		dep.broken = true
	}
	return res, err
}

// errConnectionLost is returned once the single reconnection is used up.
var errConnectionLost = errors.New("connection to the node lost")

// reconnect replaces a broken connection, once per deployment.
func (dep *deployment) reconnect(ctx context.Context) error {
	if dep.redialed {
		return errConnectionLost
	}
	dep.redialed = true
	dep.remote.Close()
	ctx, cancel := context.WithTimeout(ctx, dep.d.cfg.CleanupTimeout)
	defer cancel()
	r, err := dep.d.cfg.Dial(ctx, dep.job.Node)
	if err == nil && r == nil {
		err = errors.New("Config.Dial returned no connection")
	}
	if err != nil {
		return fmt.Errorf("%w, reconnecting: %w", errConnectionLost, err)
	}
	dep.log.Info("reconnected to the node after the connection dropped")
	dep.remote = r
	dep.broken = false
	return nil
}

// cleanupContext returns a context for cleanup that outlives a cancelled
// ctx (the node must not be left locked or half-deployed) but is bounded.
func (dep *deployment) cleanupContext(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), dep.d.cfg.CleanupTimeout+extra)
}

// The smaller jobs a rollout asks of a node besides deploying (the
// control plane's AssignmentKind): one health check during a bake, a hook
// on a blue/green switch node, and the rollback of a node that was
// deployed fine but failed its bake. They report step events like
// Deploy, and never touch a node's releases without its lock. CheckHealth
// is in health.go, RunHook in runhook.go, Rollback in rollback.go; what
// they share to set up follows.

// auxDeployment prepares a deployment value for CheckHealth and Rollback,
// in its own span; call end when done.
func (d *Deployer) auxDeployment(ctx context.Context, span string, job Job, emit func(*outpostv1.NodeStepEvent)) (context.Context, *deployment, func()) {
	if emit == nil {
		emit = func(*outpostv1.NodeStepEvent) {}
	}
	log := d.cfg.Logger.With("node_id", job.Node.GetId(), "rollout_id", job.RolloutID, "release", job.Release.GetId()).With(telemetry.LogArgs(ctx)...)
	ctx, sp := d.cfg.Tracer.Start(ctx, span, trace.WithAttributes(
		jobAttrs(job)...))
	dep := &deployment{
		d:   d,
		job: job,
		log: log,
		rep: &reporter{
			nodeID: job.Node.GetId(), rolloutID: job.RolloutID, address: job.Node.GetAddress(),
			emit: emit, tracer: d.cfg.Tracer, log: log, now: d.cfg.Now,
		},
	}
	return ctx, dep, func() { sp.End() }
}

// invalidJob is an ErrInvalidJob saying what is wrong.
func invalidJob(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidJob, fmt.Sprintf(format, args...))
}

// validateIdentity checks what every job names: the node, the rollout,
// the owner and the release id, which reach the node's lock file and
// paths.
func (dep *deployment) validateIdentity() error {
	j := dep.job
	if j.Node.GetId() == "" || j.Node.GetAddress() == "" {
		return invalidJob("node id and address are required")
	}
	for _, v := range []struct{ name, value string }{{"rollout id", j.RolloutID}, {"owner", j.Owner}} {
		if v.value == "" || strings.ContainsFunc(v.value, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return invalidJob("%s %q must be non-empty, without control characters", v.name, v.value)
		}
	}
	if id := j.Release.GetId(); !validReleaseID(id) {
		return invalidJob("release id %q must match %s, not end in .partial and be at most 200 bytes", id, releaseIDPattern)
	}
	return nil
}

// validateAux checks what a job that needs no artifact must hold, and
// applies the spec's defaults.
func (dep *deployment) validateAux() error {
	if err := dep.validateIdentity(); err != nil {
		return err
	}
	dep.spec = dep.job.Spec
	if err := dep.spec.CheckAndSetDefaults(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidJob, err)
	}
	return nil
}

// connectAux dials the node and resolves the deploy path, like connect
// without the artifact checks.
func (dep *deployment) connectAux(ctx context.Context) error {
	r, err := dep.d.cfg.Dial(ctx, dep.job.Node)
	if err == nil && r == nil {
		err = errors.New("Config.Dial returned no connection")
	}
	if err != nil {
		return fmt.Errorf("connect %s: %w", dep.job.Node.GetAddress(), err)
	}
	if dep.dir, err = ResolvePath(ctx, r, dep.spec.Path); err != nil {
		r.Close()
		return err
	}
	dep.remote = r
	dep.lockContent = lockContentFor(LockInfo{
		Owner: dep.job.Owner, Rollout: dep.job.RolloutID, Release: dep.job.Release.GetId(),
		Epoch: dep.job.Epoch, Time: dep.d.cfg.Now().UTC().Truncate(time.Millisecond),
	})
	return nil
}

// jobAttrs are the attributes of a job's deployment span.
func jobAttrs(job Job) []attribute.KeyValue {
	return []attribute.KeyValue{
		telemetry.AttrNodeID.String(job.Node.GetId()),
		telemetry.AttrRolloutID.String(job.RolloutID),
		telemetry.AttrReleaseID.String(job.Release.GetId()),
		telemetry.AttrApp.String(job.Release.GetApp()),
		telemetry.AttrDatacenter.String(job.Node.GetDatacenter()),
	}
}
