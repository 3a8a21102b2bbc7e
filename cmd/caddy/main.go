// Command caddy is Caddy with its standard modules and the gateway, so the
// gateway runs with a plain `go run ./cmd/caddy` (what xcaddy would build).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-gateway/caddy-gateway"
)

func main() {
	caddycmd.Main()
}
