package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/pki"
)

// Defaults and limits of credential and token lifetimes.
const (
	DefaultGatewayCertTTL = 24 * time.Hour
	DefaultUserCertTTL    = 90 * 24 * time.Hour
	MaxUserCertTTL        = pki.MaxClientTTL
	AdminCertTTL          = 365 * 24 * time.Hour
	DefaultJoinTokenTTL   = 30 * time.Minute
	MaxJoinTokenTTL       = 7 * 24 * time.Hour
	// tokenRetention keeps used, revoked and expired tokens listable for a
	// day before etcd drops them.
	tokenRetention = 24 * time.Hour
	// recordRetention keeps credential and revocation records an hour past
	// the certificate's expiry, so clocks that differ a little between
	// replicas never see a revoked, unexpired certificate unrevoked.
	recordRetention = time.Hour
)

// Config configures an Authority.
type Config struct {
	// Store is where tokens, credential records and revocations live
	// (required). The Authority does not close it.
	Store *store.Store
	// CA issues certificates and is the only CA whose client certificates
	// are accepted (required).
	CA *pki.CA
	// Logger receives denials and credential events, never secrets. Nil
	// means slog.Default().
	Logger *slog.Logger
	// Now is the clock for expiry checks; nil means time.Now. The CA has
	// its own clock (CA.Now): give both the same one.
	Now func() time.Time
	// GatewayCertTTL is the lifetime of gateway certificates; zero means
	// DefaultGatewayCertTTL. Gateways renew after two thirds of it.
	GatewayCertTTL time.Duration
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Store == nil {
		return errors.New("auth: Store is required")
	}
	if c.CA == nil {
		return errors.New("auth: CA is required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.GatewayCertTTL < 0 || c.GatewayCertTTL > pki.MaxClientTTL:
		return fmt.Errorf("auth: GatewayCertTTL %v outside [0, %v]", c.GatewayCertTTL, pki.MaxClientTTL)
	case c.GatewayCertTTL == 0:
		c.GatewayCertTTL = DefaultGatewayCertTTL
	}
	return nil
}

// Authority authenticates and authorizes calls, and issues and revokes
// credentials. It owns one goroutine (the revocation watch); Close stops
// it.
type Authority struct {
	cfg     Config
	log     *slog.Logger
	store   *store.Store
	ca      *pki.CA
	tokens  *TokenStore
	revoked *revocations

	cancel context.CancelFunc
	done   chan struct{}
}

// New loads the revocation list (bounded by ctx) and starts watching it.
// ctx bounds only the start; Close ends the Authority.
func New(ctx context.Context, cfg Config) (*Authority, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	a := &Authority{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "auth"),
		store: cfg.Store,
		ca:    cfg.CA,
		done:  make(chan struct{}),
	}
	a.tokens = &TokenStore{store: cfg.Store, ca: cfg.CA, now: cfg.Now}
	a.revoked = newRevocations(cfg.Store, a.log)
	if err := a.revoked.load(ctx); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() {
		defer close(a.done)
		a.revoked.run(wctx)
	}()
	return a, nil
}

// Close stops the revocation watch and waits for it. Calls authorized
// afterwards check revocations against etcd directly.
func (a *Authority) Close() {
	a.cancel()
	<-a.done
}

// Tokens returns the join token store.
func (a *Authority) Tokens() *TokenStore { return a.tokens }

// CA returns the certificate authority.
func (a *Authority) CA() *pki.CA { return a.ca }
