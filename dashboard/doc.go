// Package dashboard serves roost's web dashboard: the page at / and its
// assets under /ui/, built from web/ (TypeScript and Preact, bundled by
// esbuild: make build runs npm ci and npm run build) and embedded in the
// binary. The dashboard is a client of the public REST and WebSocket API
// like any other; this package serves files only and knows nothing of
// sandboxes, keys or the control plane.
//
// It is not responsible for the API the dashboard calls, nor for telling
// dashboard paths from API paths: the control plane routes / and /ui/
// here.
package dashboard
