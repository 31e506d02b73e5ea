package chaos

import (
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// haSetup is three etcd members, three control plane replicas, one
// gateway and six nodes, with every node's SSH slowed so that a rollout in
// batches of two lasts several seconds.
type haSetup struct {
	c      *cluster
	etcd   []string
	nodes  []*node
	leader string // the leader's name, as of startHA or the last currentLeader
	epoch  int64
	// cl is a client of a replica that is not the leader: it serves
	// reads, watches and rollout creation, and survives the leader.
	cl   *e2etest.Client
	clOf string // the replica cl talks to
}

const haTTL = 2 * time.Second

func startHA(t *testing.T, gatewayGrace time.Duration) *haSetup {
	t.Helper()
	h := &haSetup{etcd: startEtcd(t)}
	h.c = startCluster(t, cpOptions{replicas: 3, etcd: h.etcd, leaderTTL: haTTL, gatewayGrace: gatewayGrace})
	h.currentLeader(t)
	creds := newSSHCreds(t)
	h.nodes = startNodes(t, 6, creds, nodeOptions{})
	if err := h.cl.Apply(ctxT(t), inventory(h.nodes, "dc-1")); err != nil {
		t.Fatal(err)
	}
	h.c.startGateway("gw-1", "dc-1", 4, creds)
	return h
}

// currentLeader reads who leads now into h.leader and h.epoch, and points
// h.cl at another replica. A test calls it right before it harms the
// leader: on a loaded machine a 2 s lease can lapse by itself, so the
// leader of startHA may have handed over since.
func (h *haSetup) currentLeader(t *testing.T) {
	t.Helper()
	h.leader, h.epoch = waitLeader(t, etcdClient(t, h.etcd), "")
	if h.cl != nil && h.clOf != h.leader {
		return
	}
	for _, cp := range h.c.cps {
		if cp.name != h.leader {
			h.cl, h.clOf = h.c.client(cp), cp.name
			return
		}
	}
}

// startRollout uploads and rolls out a release in batches of two, and
// returns once the first batch succeeded and the second runs.
func (h *haSetup) startRollout(t *testing.T) (*outpostv1.Rollout, release) {
	t.Helper()
	rel := buildRelease(t, "1.0.0", 1<<20)
	digest := upload(t, h.cl, rel)
	setDelay(h.nodes, 40*time.Millisecond)
	r := create(t, h.cl, e2etest.RollingPlan("release-1.0.0.tar.gz", "2", 0), digest)
	waitRollout(t, h.cl, r.GetId(), "the second batch to run", func(r *outpostv1.Rollout) bool {
		return r.GetNodeCounts().GetSucceeded() >= 2 && r.GetNodeCounts().GetRunning() > 0
	})
	return r, rel
}

// checkAllDeployed checks the end of a rollout that must succeed on every
// node with each node deployed exactly once, and returns the epochs that
// activated the nodes, by node. diedWith are the nodes whose result a
// killed leader had just written (see checkAudit).
func (h *haSetup) checkAllDeployed(t *testing.T, r *outpostv1.Rollout, rel release, diedWith map[string]bool) map[string]int64 {
	t.Helper()
	done := waitRollout(t, h.cl, r.GetId(), "the end of the rollout", terminal)
	states := map[string]outpostv1.NodeState{}
	for _, n := range h.nodes {
		states[n.id] = outpostv1.NodeState_NODE_STATE_SUCCEEDED
	}
	checkRollout(t, h.cl, done, outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, states)
	epochs := map[string]int64{}
	for _, n := range h.nodes {
		for _, e := range checkNode(t, n, wantOf(done, rel), 1) {
			if e.Action == "activate" && e.Result == "succeeded" && e.Release == done.GetReleaseId() {
				epochs[n.id] = e.Epoch
			}
		}
	}
	checkAudit(t, h.cl, done, states, diedWith)
	return epochs
}

func TestLeaderKilledMidRollout(t *testing.T) {
	h := startHA(t, 0)
	r, rel := h.startRollout(t)

	h.currentLeader(t)
	killed := time.Now()
	h.c.byName(h.leader).kill()
	// Before any other replica can lead: what the dead leader had done.
	// A node is recorded RUNNING before its assignment is sent, so a node
	// still PENDING now was never handed out by the dead leader.
	before := rolloutNodes(t, h.cl, r.GetId())
	next, epoch := waitLeader(t, etcdClient(t, h.etcd), h.leader)
	took := time.Since(killed)
	t.Logf("leader %s killed with SIGKILL; %s leads with epoch %d after %v (TTL %v)", h.leader, next, epoch, took.Round(time.Millisecond), haTTL)
	if epoch <= h.epoch {
		t.Errorf("new leader's epoch %d is not above the dead leader's %d", epoch, h.epoch)
	}
	// etcd expires a lease within its TTL plus a keepalive interval; the
	// slack is for a loaded machine, not a tolerance of the design.
	if limit := haTTL + 5*time.Second; took > limit {
		t.Errorf("took %v for a new leader, want within about the TTL (%v)", took, limit)
	}

	diedWith := map[string]bool{}
	for id, rec := range before {
		diedWith[id] = rec.GetState() == outpostv1.NodeState_NODE_STATE_SUCCEEDED
	}
	epochs := h.checkAllDeployed(t, r, rel, diedWith)
	// Nodes the dead leader had finished or handed out carry the epoch of
	// their assignment in their history (the dead leader's, or an earlier
	// leader's if leadership moved during the first batch); the rest were
	// assigned by the new leader and carry the new one. The rollout was
	// stopped in its second batch, so both kinds exist.
	pending := 0
	for id, rec := range before {
		want := assignmentEpoch(rec.GetAssignmentId())
		if rec.GetState() == outpostv1.NodeState_NODE_STATE_PENDING {
			want = epoch
			pending++
		}
		if epochs[id] != want {
			t.Errorf("%s (%v when the leader died) was activated under epoch %d, want %d", id, rec.GetState(), epochs[id], want)
		}
	}
	if pending == 0 {
		t.Errorf("no node was pending when the leader died; the kill came too late to test a takeover mid-rollout")
	}
}

var leadershipLostRE = regexp.MustCompile(`leadership lost`)

// assignmentEpochRE is the end of an assignment id: the epoch of the
// leader that made it and a sequence number.
var assignmentEpochRE = regexp.MustCompile(`-e([0-9]+)-[0-9]+$`)

// assignmentEpoch returns the epoch an assignment id was made in, or 0.
func assignmentEpoch(id string) int64 {
	m := assignmentEpochRE.FindStringSubmatch(id)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func TestLeaderPausedPastItsLease(t *testing.T) {
	// The grace outlasts the pause: the nodes the frozen leader had handed
	// out are still running on the gateway, which must resume them with
	// the new leader rather than have them deployed again.
	h := startHA(t, 30*time.Second)
	r, rel := h.startRollout(t)

	// The leader's key, read together with who leads (they are one read
	// apart: read again if leadership moved in between).
	ecli := etcdClient(t, h.etcd)
	var oldKey string
	var oldEpoch int64
	for attempt := 0; oldEpoch == 0 || oldEpoch != h.epoch; attempt++ {
		if attempt == 5 {
			t.Fatalf("leadership keeps moving: key of epoch %d, leader %s of epoch %d", oldEpoch, h.leader, h.epoch)
		}
		h.currentLeader(t)
		resp, err := ecli.Get(ctxT(t), store.LeaderPrefix+"/", clientv3.WithFirstCreate()...)
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("read the leader key: %v", err)
		}
		oldKey, oldEpoch = string(resp.Kvs[0].Key), resp.Kvs[0].CreateRevision
	}
	old := h.c.byName(h.leader)
	old.signal(syscall.SIGSTOP)
	paused := time.Now()
	next, epoch := waitLeader(t, ecli, h.leader)
	t.Logf("leader %s frozen with SIGSTOP; %s leads with epoch %d after %v", h.leader, next, epoch, time.Since(paused).Round(time.Millisecond))
	// The frozen leader's fence, as every write that advances a rollout
	// carries it, no longer holds: its lease expired with its key.
	fenced, err := ecli.Txn(ctxT(t)).
		If(clientv3.Compare(clientv3.CreateRevision(oldKey), "=", oldEpoch)).
		Then(clientv3.OpPut(store.Root+"chaos-probe", "written under the deposed leader's fence")).
		Commit()
	switch {
	case err != nil:
		t.Errorf("a write fenced on the deposed leader's key: %v", err)
	case fenced.Succeeded:
		t.Errorf("a write fenced on the deposed leader's key %s (epoch %d) succeeded; want it refused", oldKey, oldEpoch)
	}
	// Stay frozen a while after the takeover, so the old leader wakes up
	// well past its lease with writes still queued.
	time.Sleep(time.Second)
	old.signal(syscall.SIGCONT)
	old.waitLog(t, leadershipLostRE, waitLimit)

	h.checkAllDeployed(t, r, rel, nil)
	// The old leader is a follower now: it refuses leader-only calls,
	// naming the new leader.
	_, err = h.c.client(old).AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: r.GetId()})
	if err == nil || !regexp.MustCompile(`the leader is `+next).MatchString(err.Error()) {
		t.Errorf("abort on the deposed leader = %v, want UNAVAILABLE naming %s", err, next)
	}
	t.Logf("deposed leader's log: %d fenced writes refused, %d leadership-lost lines",
		old.logged(regexp.MustCompile(`fenced write was refused`)), old.logged(leadershipLostRE))
}
