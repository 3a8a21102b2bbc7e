// Command stockcaddy is stock Caddy (standard modules only), built from the
// same go.mod as cmd/caddy so both binaries use the same Caddy version. It is
// the baseline of bench/run.sh.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
