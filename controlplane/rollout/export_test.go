package rollout

import "context"

// Settle returns once the engine has applied everything queued on its
// loop before the call and written what that changed: it runs nothing on
// the loop and waits for the commit after it. The loop serves one request
// at a time, so a test that moved the clock or sent a gateway message
// then reads the outcome from etcd. For the tests of rollout_test.
func (e *Engine) Settle(ctx context.Context) error {
	_, err := e.doDurable(ctx, func(context.Context) (any, error) { return nil, nil })
	return err
}
