#!/usr/bin/env bash
# After `make up`: show the quickstart cluster working with real packets.
# A Pod on one node curls the Pod on the other node by its IP; the answer names the
# Pod that served it and the client address it saw: the caller's own Pod IP (no NAT).
set -euo pipefail
nsk=${1:-nsk}
mapfile -t pods < <("$nsk" get pods -l run=my-nginx -o name | cut -d/ -f2)
ip_of() { "$nsk" get pod "$1" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["podIP"])'; }
a=${pods[0]} b=${pods[1]}
echo
echo "\$ nsk exec $a -- curl -s $(ip_of "$b")"
"$nsk" exec "$a" -- curl -s --max-time 5 "$(ip_of "$b")"
echo
echo "The cluster stays up: try 'nsk get pods -o wide', 'nsk exec node/node-1 -- ip route', 'nsk down'."
