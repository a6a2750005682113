// Package storetest gives tests of any package fresh, empty databases for
// the store, of every kind the store supports: a SQLite file in the
// test's temporary directory, and, when ROOST_TEST_POSTGRES names a
// PostgreSQL server, a schema of its own on that server. [Run] runs one
// test body against each, so a suite written once checks both databases.
//
// It hands out database URLs for [roost.dev/roost/store.Open] and does not
// open stores itself, so it imports nothing of roost: any package's tests
// may use it, the store's own included. It is for tests only.
package storetest
