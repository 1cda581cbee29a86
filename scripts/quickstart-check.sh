#!/usr/bin/env bash
# After `make up`: show the quickstart cluster working with real packets.
# A Pod on one node curls the Pod on the other node by its IP; the answer names the
# Pod that served it and the client address it saw: the caller's own Pod IP (no NAT).
set -euo pipefail
nsk=${1:-nsk}
export NSK_CLUSTER=${2:-nsk}  # other clusters may be up: this one
flag=""
if [ "$(ls /run/nsk | wc -l)" -gt 1 ]; then flag=" --cluster $NSK_CLUSTER"; fi
mapfile -t pods < <("$nsk" get pods -l run=my-nginx -o name | cut -d/ -f2)
ip_of() { "$nsk" get pod "$1" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["podIP"])'; }
a=${pods[0]} b=${pods[1]}
echo
echo "\$ nsk exec $a -- curl -s $(ip_of "$b")"
"$nsk" exec "$a" -- curl -s --max-time 5 "$(ip_of "$b")"
echo
echo "The cluster stays up: try 'nsk get pods -o wide$flag', 'nsk exec node/node-1$flag -- ip route', 'nsk down$flag'."
