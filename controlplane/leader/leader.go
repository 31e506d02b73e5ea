package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultTTL is the lease TTL when Config.TTL is zero: a dead leader is
// replaced within about this long, and a leader whose keepalives stall for
// this long loses leadership.
const DefaultTTL = 10 * time.Second

// ErrNoLeader is returned by Observe when no replica leads.
var ErrNoLeader = errors.New("no leader")

// errSessionLost means the lease ended before leadership could be
// reported; Campaign starts over with a new lease.
var errSessionLost = errors.New("election session lost")

// Config configures a campaign.
type Config struct {
	// Client is the etcd client; required. It must stay open while the
	// Leadership is held.
	Client *clientv3.Client
	// Prefix is the election prefix, normally store.LeaderPrefix; required.
	// Candidates' keys are Prefix + "/" + lease id.
	Prefix string
	// Name identifies this replica to Observe; required.
	Name string
	// TTL is the lease TTL, rounded up to whole seconds. Zero means
	// DefaultTTL (10 s). etcd may raise very small TTLs to its minimum.
	TTL time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	switch {
	case c.Client == nil:
		return errors.New("leader: Client is required")
	case c.Prefix == "":
		return errors.New("leader: Prefix is required")
	case c.Name == "":
		return errors.New("leader: Name is required")
	case c.TTL < 0:
		return fmt.Errorf("leader: negative TTL %v", c.TTL)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func (c *Config) ttlSeconds() int64 {
	return max(1, int64(math.Ceil(c.TTL.Seconds())))
}

// Campaign blocks until this replica is the leader, ctx is done, or an
// error occurs. ctx also bounds the leadership: when it is done, the
// Leadership ends (Done closes) and the election key is deleted, as with
// Resign. The caller must cancel ctx or call Resign to release the
// leadership and its goroutines.
//
// If the lease expires while Campaign waits (etcd unreachable for longer
// than the TTL), Campaign starts over with a new lease instead of reporting
// leadership it no longer holds.
func Campaign(ctx context.Context, cfg Config) (*Leadership, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	// Each attempt needs a lease grant and a lease expiry, so this loop
	// cannot spin faster than one TTL per attempt.
	for attempt := 1; ; attempt++ {
		l, err := campaignOnce(ctx, &cfg)
		if !errors.Is(err, errSessionLost) {
			return l, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("campaign: %w", ctx.Err())
		}
		cfg.Logger.Warn("election lease lost while campaigning, retrying", "name", cfg.Name, "attempt", attempt)
	}
}

func campaignOnce(ctx context.Context, cfg *Config) (*Leadership, error) {
	client := cfg.Client
	grant, err := client.Grant(ctx, cfg.ttlSeconds())
	if err != nil {
		return nil, fmt.Errorf("campaign: grant lease: %w", err)
	}
	// The session must outlive ctx's cancellation long enough to revoke its
	// lease; Leadership.monitor ends it when ctx is done.
	sess, err := concurrency.NewSession(client,
		concurrency.WithLease(grant.ID),
		concurrency.WithTTL(int(cfg.ttlSeconds())),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		revoke(client, grant.ID)
		return nil, fmt.Errorf("campaign: session: %w", err)
	}
	fail := func(err error) (*Leadership, error) {
		sess.Orphan()
		revoke(client, sess.Lease())
		return nil, err
	}

	// Election.Campaign only waits for older candidates' keys to go; it
	// does not notice our own lease expiring meanwhile. Cancel it when the
	// session ends.
	election := concurrency.NewElection(sess, cfg.Prefix)
	cctx, cancel := context.WithCancel(ctx)
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	err = election.Campaign(cctx, cfg.Name)
	cancel()
	<-watcherDone
	if err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("campaign: %w", ctx.Err()))
		}
		if isDone(sess.Done()) {
			return fail(errSessionLost)
		}
		return fail(fmt.Errorf("campaign: %w", err))
	}

	// Re-check after winning: our key still exists with our lease, and it is
	// the oldest key under the prefix. One transaction, so the answer is
	// about a single revision.
	key, epoch := election.Key(), election.Rev()
	prefix := cfg.Prefix + "/"
	resp, err := client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", epoch),
			clientv3.Compare(clientv3.LeaseValue(key), "=", int64(sess.Lease()))).
		Then(clientv3.OpGet(prefix, clientv3.WithFirstCreate()...)).
		Commit()
	if err != nil {
		return fail(fmt.Errorf("campaign: verify leader key: %w", err))
	}
	if !resp.Succeeded || isDone(sess.Done()) {
		return fail(errSessionLost)
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || string(kvs[0].Key) != key {
		return fail(fmt.Errorf("campaign: won election but %s is not the oldest key under %s", key, prefix))
	}

	l := &Leadership{
		client:  client,
		sess:    sess,
		name:    cfg.Name,
		key:     key,
		epoch:   epoch,
		logger:  cfg.Logger,
		done:    make(chan struct{}),
		resignc: make(chan struct{}),
		exited:  make(chan struct{}),
	}
	go l.monitor(ctx)
	cfg.Logger.Info("became leader", "name", cfg.Name, "epoch", epoch)
	return l, nil
}

// Leadership is held leadership. It implements store.Fence.
type Leadership struct {
	client *clientv3.Client
	sess   *concurrency.Session
	name   string
	key    string
	epoch  int64
	logger *slog.Logger

	done    chan struct{} // closed by end
	resignc chan struct{} // closed by Resign to stop monitor
	exited  chan struct{} // closed when monitor returns

	resignOnce sync.Once
	endOnce    sync.Once
	endErr     error // set by endOnce
}

// Epoch returns the create revision of the leader key. It is larger for
// every later leader, so it orders leaders and fences their writes.
func (l *Leadership) Epoch() int64 { return l.epoch }

// Name returns this replica's name as campaigned.
func (l *Leadership) Name() string { return l.name }

// Key returns the election key this leadership holds.
func (l *Leadership) Key() string { return l.key }

// Cmps returns the fence: the leader key still has this leadership's create
// revision. It implements store.Fence.
func (l *Leadership) Cmps() []clientv3.Cmp {
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.epoch)}
}

// Done returns a channel closed when leadership is lost: the lease expired
// or could not be kept alive, Resign was called, or Campaign's ctx ended.
// On Resign and ctx it closes before the key is deleted, so no other replica
// can lead while Done is still open.
func (l *Leadership) Done() <-chan struct{} { return l.done }

// Resign gives up leadership: Done closes, then the lease (and with it the
// leader key) is revoked so another replica can take over at once. ctx
// bounds the revoke; if it fails the key goes when the lease expires. Resign
// waits for the Leadership's goroutine and may be called more than once.
func (l *Leadership) Resign(ctx context.Context) error {
	l.resignOnce.Do(func() { close(l.resignc) })
	err := l.end(ctx)
	<-l.exited
	return err
}

func (l *Leadership) monitor(ctx context.Context) {
	defer close(l.exited)
	select {
	case <-l.sess.Done():
		if isDone(l.resignc) {
			return // Resign orphaned the session itself.
		}
		l.logger.Warn("leadership lost: election lease expired or keepalive failed", "name", l.name, "epoch", l.epoch)
	case <-ctx.Done():
		l.logger.Info("leadership released: context done", "name", l.name, "epoch", l.epoch)
	case <-l.resignc:
		return // Resign ends the leadership with its own ctx.
	}
	// Revoke even after a keepalive failure: the lease may still be alive
	// on the server, and removing it lets a follower take over sooner.
	rctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	if err := l.end(rctx); err != nil {
		l.logger.Debug("revoke election lease", "name", l.name, "err", err)
	}
}

// end closes Done, stops the keepalive and revokes the lease, once.
func (l *Leadership) end(ctx context.Context) error {
	l.endOnce.Do(func() {
		close(l.done)
		l.sess.Orphan()
		_, err := l.client.Revoke(ctx, l.sess.Lease())
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			l.endErr = fmt.Errorf("resign: revoke lease: %w", err)
		}
	})
	return l.endErr
}

// revokeTimeout bounds revokes done on the caller's behalf after its ctx
// ended. A revoke on a healthy etcd takes milliseconds; if it fails, the
// lease still expires after its TTL.
const revokeTimeout = 2 * time.Second

// revoke releases a lease that never became leadership, best effort.
func revoke(client *clientv3.Client, id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	client.Revoke(ctx, id) //nolint:errcheck // the lease expires on its own anyway
}

// Observe returns the current leader's name and epoch, or ErrNoLeader.
// Followers use it to refuse or forward writes.
func Observe(ctx context.Context, client *clientv3.Client, prefix string) (leaderName string, epoch int64, err error) {
	resp, err := client.Get(ctx, prefix+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", 0, fmt.Errorf("observe leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, ErrNoLeader
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision, nil
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
