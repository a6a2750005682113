// Package auth decides whether a request may reach envd and which Unix user
// it acts as. Once /init has set an access token, every request but
// GET /health must carry it in X-Access-Token; /files alternatively accepts
// a v1 signature in its query (for URLs handed to browsers and curl).
//
// It does not perform the work a request asks for, nor set the token.
package auth
