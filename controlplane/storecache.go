package controlplane

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"roost.dev/roost/store"
)

// Every API call looks its credential up, and every create its team's
// own limits; cachedStore keeps these answers in memory for a moment, so
// a burst of calls (a create every few milliseconds) costs a store read
// per key and team rather than several per call.
const (
	// readCacheTTL is how long an answer is trusted without asking the
	// store again. What is changed through this process shows at once;
	// what another replica sharing the database changes (a key deleted, a
	// quota set), within readCacheTTL.
	readCacheTTL = 2 * time.Second
	// readCacheMax bounds the answers a cache holds; a full one starts
	// over.
	readCacheMax = 10000
)

// cachedStore is a store with the credentials it finds by hash and the
// teams' own quotas cached (readCacheTTL). Whatever deletes credentials
// (a key's deletion, a team's) or sets a quota empties the cache it
// touches, here and, by a store notice, on the other replicas; a key's touch is kept in the cached copy too, so touches stay
// one per keyTouchEvery. Errors (an unknown key) are not cached: each
// asks the store. A quota counted against (a create's limits) is read in
// the store's transaction, never from here.
type cachedStore struct {
	store.Store
	log    *slog.Logger
	keys   readCache[store.APIKey]
	quotas readCache[store.Quota]
}

func newCachedStore(st store.Store, log *slog.Logger) *cachedStore {
	return &cachedStore{Store: st, log: log}
}

func (c *cachedStore) APIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	return c.keys.get(string(hash), func() (store.APIKey, error) { return c.Store.APIKeyByHash(ctx, hash) })
}

func (c *cachedStore) TouchAPIKey(ctx context.Context, id string, at time.Time) error {
	if err := c.Store.TouchAPIKey(ctx, id, at); err != nil {
		return err
	}
	c.keys.update(func(k store.APIKey) (store.APIKey, bool) {
		if k.ID != id {
			return k, false
		}
		k.LastUsedAt = &at
		return k, true
	})
	return nil
}

func (c *cachedStore) DeleteAPIKey(ctx context.Context, teamID string, kind store.KeyKind, id string) error {
	defer c.changed(ctx, topicKeys)
	return c.Store.DeleteAPIKey(ctx, teamID, kind, id)
}

func (c *cachedStore) DeleteTeam(ctx context.Context, id string) error {
	defer c.changed(ctx, topicQuotas)
	defer c.changed(ctx, topicKeys)
	return c.Store.DeleteTeam(ctx, id)
}

func (c *cachedStore) TeamQuota(ctx context.Context, teamID string) (store.Quota, error) {
	q, err := c.quotas.get(teamID, func() (store.Quota, error) { return c.Store.TeamQuota(ctx, teamID) })
	return maps.Clone(q), err
}

func (c *cachedStore) SetTeamQuota(ctx context.Context, teamID string, q store.Quota) error {
	defer c.changed(ctx, topicQuotas)
	return c.Store.SetTeamQuota(ctx, teamID, q)
}

// Notice topics of what replicas cache.
const (
	topicKeys    = "keys"    // credentials
	topicQuotas  = "quotas"  // teams' own limits
	topicSandbox = "sandbox" // a sandbox's route (Key: its ID)
	topicHosts   = "hosts"   // hosts as scheduling sees them
)

// changed forgets what topic caches here, and tells the other replicas
// to (a replica that misses the notice forgets within readCacheTTL).
func (c *cachedStore) changed(ctx context.Context, topic string) {
	c.noticed(store.Notice{Topic: topic})
	announce(ctx, c.Store, c.log, store.Notice{Topic: topic})
}

// announceTimeout bounds telling the other replicas of a change.
const announceTimeout = 5 * time.Second

// announce tells the replicas sharing st of notices, within
// announceTimeout and whether or not ctx has ended. A failure is logged:
// a replica that misses a notice finds out when its cache expires or its
// next request fails.
func announce(ctx context.Context, st store.Notices, log *slog.Logger, notices ...store.Notice) {
	if len(notices) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), announceTimeout)
	defer cancel()
	if err := st.Announce(ctx, notices...); err != nil {
		log.Warn("tell replicas of a change", "topic", notices[0].Topic, "key", notices[0].Key, "notices", len(notices), "err", err)
	}
}

// noticed forgets what a notice says changed.
func (c *cachedStore) noticed(n store.Notice) {
	switch n.Topic {
	case topicKeys:
		c.keys.forget()
	case topicQuotas:
		c.quotas.forget()
	case store.TopicAll:
		c.keys.forget()
		c.quotas.forget()
	}
}

// readCache holds answers by key for readCacheTTL. Its zero value is
// empty and ready.
type readCache[V any] struct {
	mu      sync.Mutex
	entries map[string]cached[V]
	// gen counts the forgets: a read that a forget overtook does not
	// cache what it read before it.
	gen uint64
}

type cached[V any] struct {
	v     V
	until time.Time
}

// get returns key's answer, from the cache while it is fresh, else from
// load (cached unless it fails).
func (c *readCache[V]) get(key string, load func() (V, error)) (V, error) {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.entries[key]
	gen := c.gen
	c.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.v, nil
	}
	v, err := load()
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return v, nil
	}
	if c.entries == nil || len(c.entries) >= readCacheMax {
		c.entries = map[string]cached[V]{}
	}
	c.entries[key] = cached[V]{v: v, until: now.Add(readCacheTTL)}
	return v, nil
}

// update replaces the answers f changes, keeping their age.
func (c *readCache[V]) update(f func(V) (V, bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if v, ok := f(e.v); ok {
			e.v = v
			c.entries[k] = e
		}
	}
}

// forget empties the cache: an answer in it may have changed.
func (c *readCache[V]) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.gen++
}
