package storetest

import (
	"context"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DelayedKV is an etcd KV that holds back the transactions putting a key
// under Prefix: each one calls Wait before it is sent, and fails with
// Wait's error. Everything else passes straight through. Tests use it to
// make one writer's etcd slow or stuck while the rest of the control plane
// runs at full speed. Install it the way etcd's namespace package is
// installed, before the client is used:
//
//	c := s.Client()
//	c.KV = &storetest.DelayedKV{KV: c.KV, Prefix: store.AuditPrefix, Wait: wait}
type DelayedKV struct {
	clientv3.KV
	// Prefix selects the transactions held back (required: "" would
	// match every put).
	Prefix string
	// Wait runs before each matching transaction, with the transaction's
	// context; it must return when ctx ends.
	Wait func(ctx context.Context) error
}

// Txn implements clientv3.KV.
func (k *DelayedKV) Txn(ctx context.Context) clientv3.Txn {
	return &delayedTxn{Txn: k.KV.Txn(ctx), ctx: ctx, kv: k}
}

// delayedTxn notes whether its ops put under the prefix and waits before
// committing if so. It holds the context as etcd's own Txn does: a Txn
// lives for one call.
type delayedTxn struct {
	clientv3.Txn
	ctx  context.Context
	kv   *DelayedKV
	hold bool
}

func (t *delayedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *delayedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.note(ops)
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *delayedTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.note(ops)
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *delayedTxn) note(ops []clientv3.Op) {
	for _, op := range ops {
		if op.IsPut() && t.kv.Prefix != "" && strings.HasPrefix(string(op.KeyBytes()), t.kv.Prefix) {
			t.hold = true
		}
	}
}

func (t *delayedTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.hold {
		if err := t.kv.Wait(t.ctx); err != nil {
			return nil, err
		}
	}
	return t.Txn.Commit()
}
