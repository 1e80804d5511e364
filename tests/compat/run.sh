#!/usr/bin/env bash
# The compat suite's one entry point: the unmodified PeerJS, y-webrtc and
# matchbox clients against Switchboard's dialects (or, with --target original,
# against the original servers, to validate the tests themselves).
#
#   tests/compat/run.sh [--target switchboard|original] [peerjs] [y-webrtc] [matchbox] [cluster]
#   COMPAT_DIALECTS=peerjs tests/compat/run.sh
#
# Everything (servers, redis, Chromium, wrtc, matchbox_socket) runs inside a
# private network namespace made by scripts/netns-run, so WebRTC pairs only
# over loopback and the namespace's own veth addresses.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${SWITCHBOARD_NETNS:-}" != 1 ]; then
  # Outside the namespace: inside it there is no route to the npm registry.
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  # So is crates.io: the native matchbox peers are built here too (a no-op when built).
  case " ${*:-all} ${COMPAT_DIALECTS:-} " in
    *matchbox* | *cluster* | *" all "*) cargo build --locked --release --quiet --manifest-path matchbox-native/Cargo.toml --target-dir matchbox-native/target ;;
  esac
  exec ../../scripts/netns-run "$PWD/run.sh" "$@"
fi
exec node run.mjs "$@"
