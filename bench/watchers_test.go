package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/watchhub"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Shape and goals of BenchmarkWatchers (issue 11, finding 6).
const (
	watchersNodes = 50_000
	watchersCount = 200
	// watchersViewers is how many people the watchers belong to: ten
	// watches each, the control plane's default cap per caller.
	watchersViewers = 20
	// watchersListSamples is how many ListRollouts calls each phase times.
	watchersListSamples = 20
	watchersGoalMB      = 600
	watchersGoalList    = time.Second
	// watchersApplyChunk is the nodes per ApplyNodes call.
	watchersApplyChunk = 5000
)

// BenchmarkWatchers attaches 200 WatchRollout streams (20 viewers, ten
// each, every stream on its own connection, as separate `outpost rollout
// watch` processes would) to one rollout of 50,000 nodes on a control
// plane run as an `outpost` process with its embedded etcd, and measures
// what that costs the control plane against the same control plane with
// no watcher, in the same run:
//
//   - its resident memory: at rest before the watchers (cp-base-MB), its
//     peak while they attach and follow changes (cp-peak-MB, VmHWM reset
//     after the baseline), with them idle (cp-with-MB) and after they left
//     (cp-after-MB);
//   - its Go heap in use (from its /metrics) at rest and with the watchers;
//   - how long `outpost rollout list` (its own process, one page of 50
//     rollouts) takes at rest, while the 200 snapshots stream, and with
//     the watchers idle;
//   - how long until every watcher held the whole snapshot (and the CPU
//     time the control plane and the watchers' process spent until then),
//     and until every one saw the last change.
//
// The watchers ask for node pages of 1,000 nodes, as `outpost rollout
// watch` does; OUTPOST_BENCH_WATCHERS_PER_NODE=1 makes them ask for one
// response per node, as clients written before node_page do. They stand
// in for people's machines, so they parse only what they count (see
// frameCodec): decoding 200 snapshots here would take the CPU that the
// control plane and `rollout list` need on this machine. No gateway
// serves the nodes' datacenter, so the rollout runs without a node
// moving; pausing and resuming it three times makes changes every watcher
// must see (each rewrites the rollout record, which lists the 50,000
// nodes in its batches). Run it with -benchtime 1x.
//
// OUTPOST_BENCH_WATCHERS_NODES and OUTPOST_BENCH_WATCHERS lower the node
// and watcher counts while working on it.
func BenchmarkWatchers(b *testing.B) {
	nodes := envInt(b, "OUTPOST_BENCH_WATCHERS_NODES", watchersNodes)
	watchers := envInt(b, "OUTPOST_BENCH_WATCHERS", watchersCount)
	pageSize := int32(watchhub.PageSize)
	if os.Getenv("OUTPOST_BENCH_WATCHERS_PER_NODE") != "" {
		pageSize = 0 // as clients written before node_page
	}
	raiseFileLimit(b, uint64(4*watchers+1000))
	dir := b.TempDir()
	bin := buildOutpost(b, dir)
	// Every watcher dials from 127.0.0.1 at once, where real viewers come
	// from hosts of their own: the per-address cap on handshakes in
	// flight (32 by default) would reset most of them.
	cp := startDaemon(b, dir, "controlplane", bin, "controlplane",
		"--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "cp-data"), "--name", "bench-cp",
		"--max-unauthenticated-conns-per-ip", strconv.Itoa(2*watchers),
		"--metrics-listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "info")
	addr := cp.waitLog(b, "control plane ready", "addr")
	sys := &outpostSystem{cp: cp, addr: addr, metricsAddr: cp.waitLog(b, "control plane started", "metrics")}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	admin, err := pki.LoadCredential(filepath.Join(dir, "cp-data", "admin.pem"))
	if err != nil {
		b.Fatal(err)
	}
	client, err := e2etest.Dial(addr, admin)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()

	r := createWatchedRollout(ctx, b, dir, client, nodes)

	base := settle(b, sys)
	list := rolloutList{bin: bin, addr: addr, credential: filepath.Join(dir, "cp-data", "admin.pem")}
	baseList := list.time(ctx, b, watchersListSamples)
	resetPeak(b, cp)

	creds := make([]*pki.Credential, watchersViewers)
	for i := range creds {
		name := fmt.Sprintf("viewer-%02d", i)
		creds[i], err = enroll.CreateUser(ctx, client.AdminServiceClient, name, pki.RoleViewer, time.Hour, filepath.Join(dir, name+".pem"), addr)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	cpu0, clients0 := cp.cpuSeconds(b), selfCPU(b)
	start := time.Now()
	wctx, stopWatchers := context.WithCancel(ctx)
	ws := make([]*benchWatcher, watchers)
	var wg sync.WaitGroup
	for i := range ws {
		ws[i] = &benchWatcher{pageSize: pageSize, snapshot: make(chan struct{}), fail: make(chan error, 1)}
		conn, err := enroll.Dial(addr, creds[i%len(creds)])
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		wg.Go(func() { ws[i].run(wctx, conn, r.GetId(), nodes) })
	}
	// `rollout list` while the snapshots stream, until the last is whole.
	var attachList []time.Duration
	allSnapshots := make(chan struct{})
	go func() {
		defer close(allSnapshots)
		for _, w := range ws {
			select {
			case <-w.snapshot:
			case <-wctx.Done():
				return
			}
		}
	}()
	for done := false; !done; {
		select {
		case <-allSnapshots:
			done = true
		default:
			attachList = append(attachList, list.time(ctx, b, 1)...)
		}
		for _, w := range ws {
			select {
			case err := <-w.fail:
				b.Fatalf("watcher: %v", err)
			default:
			}
		}
	}
	snapshotSecs := time.Since(start).Seconds()
	snapshotCPU, clientsCPU := cp.cpuSeconds(b)-cpu0, selfCPU(b)-clients0

	// Changes every watcher must see: each rewrites the rollout record.
	var last *outpostv1.Rollout
	for range 3 {
		if _, err := client.PauseRollout(ctx, &outpostv1.PauseRolloutRequest{Id: r.GetId()}); err != nil {
			b.Fatal(err)
		}
		resp, err := client.ResumeRollout(ctx, &outpostv1.ResumeRolloutRequest{Id: r.GetId()})
		if err != nil {
			b.Fatal(err)
		}
		last = resp.GetRollout()
	}
	for _, w := range ws {
		if err := w.waitFor(ctx, last.GetUpdateTime().AsTime()); err != nil {
			b.Fatal(err)
		}
	}
	changeSecs := time.Since(start).Seconds() - snapshotSecs
	b.StopTimer()

	with := settle(b, sys)
	idleList := list.time(ctx, b, watchersListSamples)
	peak := cp.peakMB(b)
	stopWatchers()
	wg.Wait()
	after := settle(b, sys)

	b.ReportMetric(base.rssMB, "cp-base-MB")
	b.ReportMetric(peak, "cp-peak-MB")
	b.ReportMetric(with.rssMB, "cp-with-MB")
	b.ReportMetric(after.rssMB, "cp-after-MB")
	b.ReportMetric(peak/base.rssMB, "peak/base")
	b.ReportMetric(base.heapMB, "cp-base-heap-MB")
	b.ReportMetric(with.heapMB, "cp-with-heap-MB")
	b.ReportMetric(ms(median(baseList)), "list-base-ms")
	b.ReportMetric(ms(median(attachList)), "list-attach-ms")
	b.ReportMetric(ms(slices.Max(attachList)), "list-attach-max-ms")
	b.ReportMetric(ms(median(idleList)), "list-with-ms")
	b.ReportMetric(float64(slices.Max(attachList))/float64(median(baseList)), "list-attach-max/base")
	b.ReportMetric(snapshotSecs, "snapshots-s")
	b.ReportMetric(snapshotCPU, "snapshots-cp-cpu-s")
	b.ReportMetric(clientsCPU, "snapshots-clients-cpu-s")
	b.ReportMetric(changeSecs, "changes-s")
	b.Logf("%d watchers, %d nodes: rollout list while the snapshots streamed (%d runs): %v", watchers, nodes, len(attachList), roundAll(attachList))
	if nodes != watchersNodes || watchers != watchersCount {
		return
	}
	if peak > watchersGoalMB {
		b.Logf("GOAL MISSED: control plane peak %.0f MB (goal < %d MB)", peak, watchersGoalMB)
	}
	if worst := slices.Max(append(attachList, idleList...)); worst > watchersGoalList {
		b.Logf("GOAL MISSED: slowest rollout list %v (goal < %v)", worst.Round(time.Millisecond), watchersGoalList)
	}
}

// createWatchedRollout applies nodes inventory nodes in a datacenter no
// gateway serves and creates a rolling rollout of all of them (ten
// batches), which it returns once the engine runs it.
func createWatchedRollout(ctx context.Context, b *testing.B, dir string, client *e2etest.Client, nodes int) *outpostv1.Rollout {
	b.Helper()
	inv := make([]*outpostv1.Node, nodes)
	for i := range inv {
		inv[i] = &outpostv1.Node{
			Id:         fmt.Sprintf("node-%05d", i),
			Address:    fmt.Sprintf("10.%d.%d.%d:22", i>>16, (i>>8)&0xff, i&0xff),
			Datacenter: "dc-none",
			User:       "deploy",
			Labels:     map[string]string{"app": e2etest.App},
		}
	}
	for start := 0; start < nodes; start += watchersApplyChunk {
		if _, err := client.ApplyNodes(ctx, &outpostv1.ApplyNodesRequest{Nodes: inv[start:min(start+watchersApplyChunk, nodes)]}); err != nil {
			b.Fatal(err)
		}
	}
	artifact := filepath.Join(dir, "app.bin")
	payload := make([]byte, 1<<10)
	rand.Read(payload)
	if err := os.WriteFile(artifact, payload, 0o644); err != nil {
		b.Fatal(err)
	}
	digest, err := client.Upload(ctx, artifact)
	if err != nil {
		b.Fatal(err)
	}
	spec := scalePlan()
	spec.Strategy.Batch = "10%"
	r, err := client.Create(ctx, spec, digest)
	if err != nil {
		b.Fatal(err)
	}
	r, err = client.Wait(ctx, r.GetId(), time.Second, func(r *outpostv1.Rollout) bool {
		return r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
	})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// benchWatcher is one WatchRollout stream read as fast as it comes.
type benchWatcher struct {
	pageSize int32         // the request's node_page_size
	snapshot chan struct{} // closed once the snapshot was whole
	fail     chan error

	mu   sync.Mutex
	seen time.Time // update_time of the latest rollout received; guarded by mu
}

func (w *benchWatcher) run(ctx context.Context, conn *grpc.ClientConn, id string, nodes int) {
	fail := func(err error) {
		if ctx.Err() == nil {
			w.fail <- err
		}
	}
	stream, err := outpostv1.NewControlPlaneServiceClient(conn).WatchRollout(ctx,
		&outpostv1.WatchRolloutRequest{Id: id, NodePageSize: w.pageSize}, grpc.ForceCodecV2(frameCodec{}))
	if err != nil {
		fail(err)
		return
	}
	got := 0
	inSnapshot := true
	for {
		var f frame
		if err := stream.RecvMsg(&f); err != nil {
			fail(fmt.Errorf("after %d nodes: %w", got, err))
			return
		}
		r, err := f.parse()
		if err != nil {
			fail(err)
			return
		}
		got += r.nodes
		if r.updated != (time.Time{}) {
			w.mu.Lock()
			w.seen = r.updated
			w.mu.Unlock()
		}
		if r.snapshotEnd && inSnapshot {
			if got != nodes {
				fail(fmt.Errorf("snapshot of %d nodes, want %d", got, nodes))
				return
			}
			inSnapshot = false
			close(w.snapshot)
		}
	}
}

// frameCodec hands a client each response as its wire bytes. The
// benchmark's watchers stand in for people's machines: they parse only
// what they count (protowire, no message per node), so that their CPU
// competes as little as it can with the control plane's on this machine.
type frameCodec struct{}

func (frameCodec) Name() string { return "proto" }

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := proto.Marshal(v.(proto.Message))
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*frame) = data.Materialize()
	return nil
}

// frame is a WatchRolloutResponse as received.
type frame []byte

// frameFacts is what a benchWatcher counts in a response.
type frameFacts struct {
	nodes       int       // node states it carries
	snapshotEnd bool      // it is snapshot_end
	updated     time.Time // its rollout's update_time; zero without a rollout
}

// Field numbers of WatchRolloutResponse, WatchNodePage, Rollout and
// Timestamp that parse reads.
const (
	respRollout     = 2
	respNode        = 3
	respSnapshotEnd = 5
	respNodePage    = 6
	pageNodes       = 1
	rolloutUpdated  = 11
)

func (f frame) parse() (frameFacts, error) {
	var facts frameFacts
	err := eachField(f, func(num protowire.Number, v []byte) error {
		switch num {
		case respNode:
			facts.nodes++
		case respSnapshotEnd:
			facts.snapshotEnd = true
		case respNodePage:
			return eachField(v, func(num protowire.Number, _ []byte) error {
				if num == pageNodes {
					facts.nodes++
				}
				return nil
			})
		case respRollout:
			return eachField(v, func(num protowire.Number, ts []byte) error {
				if num != rolloutUpdated {
					return nil
				}
				t := &timestamppb.Timestamp{}
				if err := proto.Unmarshal(ts, t); err != nil {
					return err
				}
				facts.updated = t.AsTime()
				return nil
			})
		}
		return nil
	})
	return facts, err
}

// eachField calls fn with every field of a message's wire bytes: the
// contents of length-delimited ones, nil for the others.
func eachField(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, v); err != nil {
			return err
		}
	}
	return nil
}

// waitFor waits until the watcher received a rollout updated at t or
// later, polling every 50 ms until ctx ends.
func (w *benchWatcher) waitFor(ctx context.Context, t time.Time) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		w.mu.Lock()
		ok := !w.seen.Before(t)
		w.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-tick.C:
		case err := <-w.fail:
			return err
		case <-ctx.Done():
			return fmt.Errorf("a watcher did not see the rollout updated at %v: %w", t, ctx.Err())
		}
	}
}

// selfCPU is this process's user and system CPU time so far, in seconds.
func selfCPU(b *testing.B) float64 {
	b.Helper()
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		b.Fatal(err)
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(u.Utime) + tv(u.Stime)
}

// memory is what a process holds at one moment.
type memory struct {
	rssMB  float64 // VmRSS
	heapMB float64 // go_memstats_heap_inuse_bytes
}

// settle waits two seconds for the control plane to finish what it was
// doing and reads its memory.
func settle(b *testing.B, sys *outpostSystem) memory {
	b.Helper()
	time.Sleep(2 * time.Second)
	kb, err := statusKB(fmt.Sprintf("/proc/%d/status", sys.cp.Pid()), "VmRSS:")
	if err != nil {
		b.Fatal(err)
	}
	return memory{rssMB: float64(kb) / 1024, heapMB: sys.metrics(b)["go_memstats_heap_inuse_bytes"] / (1 << 20)}
}

// statusKB reads a "Name:   123 kB" line of a /proc status file.
func statusKB(path, name string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("%s: odd %s line %q", path, name, line)
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, name)
}

// resetPeak resets the daemon's VmHWM to its current RSS (Linux 4.0 and
// later), so peakMB measures from now.
func resetPeak(b *testing.B, d *daemon) {
	b.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d.Pid()), []byte("5"), 0); err != nil {
		b.Fatalf("reset the peak RSS of %s: %v", d.Name, err)
	}
}

// rolloutList runs `outpost rollout list` as a person would: its own
// process, a new connection, one page of 50 rollouts.
type rolloutList struct {
	bin, addr, credential string
}

// time times n runs.
func (l rolloutList) time(ctx context.Context, b *testing.B, n int) []time.Duration {
	b.Helper()
	var out []time.Duration
	for range n {
		start := time.Now()
		cmd := exec.CommandContext(ctx, l.bin, "rollout", "list", "--controlplane", l.addr, "--credential", l.credential)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("outpost rollout list: %v\n%s", err, msg)
		}
		out = append(out, time.Since(start))
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
