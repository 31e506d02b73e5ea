package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Errors of Redeem and Revoke. They never contain the token.
var (
	ErrTokenNotFound    = errors.New("unknown join token")
	ErrTokenUsed        = errors.New("join token already used")
	ErrTokenExpired     = errors.New("join token expired")
	ErrTokenRevoked     = errors.New("join token revoked")
	ErrTokenWrongName   = errors.New("join token is for another gateway name")
	errTokenRaceRetries = errors.New("join token changed concurrently too often")
)

// redeemAttempts bounds Redeem's compare-and-swap retries.
const redeemAttempts = 3

// TokenStore keeps join tokens in etcd, hashed.
type TokenStore struct {
	store *store.Store
	ca    *pki.CA
	now   func() time.Time
}

// TokenSpec describes a join token to create.
type TokenSpec struct {
	// Datacenter the joining gateway will serve (required).
	Datacenter string
	// GatewayName the token is for; empty means any.
	GatewayName string
	// TTL is how long the token may be used; zero means
	// DefaultJoinTokenTTL, at most MaxJoinTokenTTL.
	TTL time.Duration
	// Creator is who asked, for the record ("user/alice").
	Creator string
}

// Create stores a new single-use join token and returns it (a secret: it
// is not stored and cannot be shown again) with its description.
func (ts *TokenStore) Create(ctx context.Context, spec TokenSpec) (token string, info *outpostv1.JoinToken, err error) {
	if err := pki.CheckDatacenter(spec.Datacenter); err != nil {
		return "", nil, fmt.Errorf("join token: %w", err)
	}
	if spec.GatewayName != "" {
		if err := pki.CheckName(spec.GatewayName); err != nil {
			return "", nil, fmt.Errorf("join token: gateway %w", err)
		}
	}
	switch {
	case spec.TTL < 0 || spec.TTL > MaxJoinTokenTTL:
		return "", nil, fmt.Errorf("join token: ttl %v outside [0, %v]", spec.TTL, MaxJoinTokenTTL)
	case spec.TTL == 0:
		spec.TTL = DefaultJoinTokenTTL
	}
	tok, err := pki.NewJoinToken(ts.ca.Fingerprint())
	if err != nil {
		return "", nil, err
	}
	now := ts.now()
	info = &outpostv1.JoinToken{
		Id:          tok.ID(),
		Datacenter:  spec.Datacenter,
		GatewayName: spec.GatewayName,
		Creator:     spec.Creator,
		CreateTime:  timestamppb.New(now),
		ExpireTime:  timestamppb.New(now.Add(spec.TTL)),
		State:       outpostv1.JoinTokenState_JOIN_TOKEN_STATE_ACTIVE,
	}
	key := store.JoinTokenKey(tok.Hash())
	put, err := leasedPut(ctx, ts.store, key, info, spec.TTL+tokenRetention)
	if err != nil {
		return "", nil, fmt.Errorf("join token: %w", err)
	}
	// A 256-bit collision is not going to happen; the compare makes sure
	// a bug cannot silently reset a used token.
	absent := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	if err := ts.store.TxnIf(ctx, nil, absent, put); err != nil {
		return "", nil, fmt.Errorf("join token: store: %w", err)
	}
	return tok.Encode(), info, nil
}

// Redeem uses token for the gateway gatewayName. When the token is usable
// (known, unused, unrevoked, unexpired, for that name or any) it calls
// commit with the token's description and applies the ops commit returns
// in the same etcd transaction that marks the token used: either both
// happen or neither does, and of two concurrent redeemers only one
// succeeds. An error from commit leaves the token unused. commit may be
// called again if the token changed meanwhile.
func (ts *TokenStore) Redeem(ctx context.Context, token, gatewayName string, commit func(*outpostv1.JoinToken) ([]clientv3.Op, error)) (*outpostv1.JoinToken, error) {
	tok, err := pki.ParseJoinToken(token)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenNotFound, err)
	}
	if tok.CAFingerprint != ts.ca.Fingerprint() {
		return nil, fmt.Errorf("%w: it was made by another control plane CA", ErrTokenNotFound)
	}
	key := store.JoinTokenKey(tok.Hash())
	for attempt := 0; attempt < redeemAttempts; attempt++ {
		info := new(outpostv1.JoinToken)
		found, modRev, err := ts.store.Get(ctx, key, info)
		if err != nil {
			return nil, fmt.Errorf("join token: %w", err)
		}
		if !found {
			return nil, ErrTokenNotFound
		}
		now := ts.now()
		if err := usable(info, now); err != nil {
			return nil, err
		}
		if info.GetGatewayName() != "" && info.GetGatewayName() != gatewayName {
			return nil, fmt.Errorf("%w %q", ErrTokenWrongName, info.GetGatewayName())
		}
		ops, err := commit(proto.Clone(info).(*outpostv1.JoinToken))
		if err != nil {
			return nil, err
		}
		info.State = outpostv1.JoinTokenState_JOIN_TOKEN_STATE_USED
		info.UsedBy = gatewayName
		info.EndTime = timestamppb.New(now)
		put, err := ignoreLeasePut(key, info)
		if err != nil {
			return nil, err
		}
		unchanged := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", modRev)}
		switch err := ts.store.TxnIf(ctx, nil, unchanged, append(ops, put)...); {
		case err == nil:
			return info, nil
		case errors.Is(err, store.ErrConflict):
			continue // someone used or revoked it meanwhile: look again
		default:
			return nil, fmt.Errorf("join token: %w", err)
		}
	}
	return nil, errTokenRaceRetries
}

// usable reports why a stored token cannot be used at now, or nil.
func usable(info *outpostv1.JoinToken, now time.Time) error {
	switch info.GetState() {
	case outpostv1.JoinTokenState_JOIN_TOKEN_STATE_USED:
		return ErrTokenUsed
	case outpostv1.JoinTokenState_JOIN_TOKEN_STATE_REVOKED:
		return ErrTokenRevoked
	case outpostv1.JoinTokenState_JOIN_TOKEN_STATE_ACTIVE:
	default:
		return fmt.Errorf("%w: state %v", ErrTokenNotFound, info.GetState())
	}
	if !now.Before(info.GetExpireTime().AsTime()) {
		return ErrTokenExpired
	}
	return nil
}

// Revoke makes the token with this id unusable and returns its
// description. Revoking a used or revoked token changes nothing.
func (ts *TokenStore) Revoke(ctx context.Context, id string) (*outpostv1.JoinToken, error) {
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%w: id %q is not 16 lower-case hex digits", ErrTokenNotFound, id)
	}
	var keys []string
	if _, err := ts.store.List(ctx, store.JoinTokenIDPrefix(id), 2, "", func(key string, _ []byte) error {
		keys = append(keys, key)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("join token: %w", err)
	}
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("%w: no token has id %s", ErrTokenNotFound, id)
	case 1:
	default:
		return nil, fmt.Errorf("join token id %s is ambiguous", id)
	}
	key := keys[0]
	for attempt := 0; attempt < redeemAttempts; attempt++ {
		info := new(outpostv1.JoinToken)
		found, modRev, err := ts.store.Get(ctx, key, info)
		if err != nil {
			return nil, fmt.Errorf("join token: %w", err)
		}
		if !found {
			return nil, fmt.Errorf("%w: no token has id %s", ErrTokenNotFound, id)
		}
		if info.GetState() != outpostv1.JoinTokenState_JOIN_TOKEN_STATE_ACTIVE {
			ts.setComputedState(info)
			return info, nil
		}
		info.State = outpostv1.JoinTokenState_JOIN_TOKEN_STATE_REVOKED
		info.EndTime = timestamppb.New(ts.now())
		put, err := ignoreLeasePut(key, info)
		if err != nil {
			return nil, err
		}
		unchanged := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", modRev)}
		switch err := ts.store.TxnIf(ctx, nil, unchanged, put); {
		case err == nil:
			return info, nil
		case errors.Is(err, store.ErrConflict):
			continue
		default:
			return nil, fmt.Errorf("join token: %w", err)
		}
	}
	return nil, errTokenRaceRetries
}

// List returns up to limit tokens sorted by id after the key `after`
// ("" for the first page) and the key to continue from ("" at the end).
func (ts *TokenStore) List(ctx context.Context, limit int64, after string) ([]*outpostv1.JoinToken, string, error) {
	var out []*outpostv1.JoinToken
	next, err := ts.store.List(ctx, store.JoinTokensPrefix, limit, after, func(_ string, v []byte) error {
		info := new(outpostv1.JoinToken)
		if err := proto.Unmarshal(v, info); err != nil {
			return err
		}
		ts.setComputedState(info)
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("join tokens: %w", err)
	}
	return out, next, nil
}

// setComputedState marks an active token past its expiry EXPIRED.
func (ts *TokenStore) setComputedState(info *outpostv1.JoinToken) {
	if info.GetState() == outpostv1.JoinTokenState_JOIN_TOKEN_STATE_ACTIVE && !ts.now().Before(info.GetExpireTime().AsTime()) {
		info.State = outpostv1.JoinTokenState_JOIN_TOKEN_STATE_EXPIRED
	}
}

// leasedPut returns a put of m at key bound to a new lease of ttl (at
// least a minute), so etcd deletes the key when the lease runs out.
func leasedPut(ctx context.Context, s *store.Store, key string, m proto.Message, ttl time.Duration) (clientv3.Op, error) {
	return s.OpPutLeased(ctx, key, m, max(ttl, time.Minute))
}

// ignoreLeasePut returns a put of m at key that keeps the key's lease.
func ignoreLeasePut(key string, m proto.Message) (clientv3.Op, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("encode %s: %w", key, err)
	}
	return clientv3.OpPut(key, string(b), clientv3.WithIgnoreLease()), nil
}
