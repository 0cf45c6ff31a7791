// Package loadtest drives three copies of the example server in
// examples/httpserver, sharing one real redis-server, well above the limit
// of its /hello route with vegeta, and checks that the limit holds across
// the copies. It also measures the latency the middleware adds, against
// three copies started with RATE_LIMIT=off.
//
// It is a module of its own so that vegeta stays out of the root module's
// go.mod. It has no API: everything is in TestLoad.
//
//	cd examples/httpserver/loadtest
//	REDISLIMIT_REQUIRE_REDIS=1 go test -race -count=1 -v ./...
//
// TestLoad skips when redis-server is not installed, unless
// REDISLIMIT_REQUIRE_REDIS is "1". When LOADTEST_REPORT names a file
// (relative to this directory), the figures are written to it as Markdown.
// Every server listens on 127.0.0.1, and every request goes there: the
// client addresses in X-Forwarded-For come from 198.51.100.0/24
// (TEST-NET-2) and are never dialled.
package loadtest
