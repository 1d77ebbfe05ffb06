#!/usr/bin/env bash
# The README's first command: sets up a fresh machine and runs a local outband stack
# on embedded defaults — a QEMU machine whose VNC console plays the BMC, a gateway,
# and an agent that dials out to it — then keeps it running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked -p outband-gateway -p outband-agent -p outband-manager
BIN=${CARGO_TARGET_DIR:-target}/release

RUN=${OUTBAND_DEMO_DIR:-$PWD/.demo}
mkdir -p "$RUN"
GW_HTTP=${OUTBAND_HTTP:-127.0.0.1:8080}
MGR_HTTP=${OUTBAND_MANAGER_HTTP:-127.0.0.1:8090}
GW_AGENTS=${OUTBAND_AGENT_LISTEN:-127.0.0.1:7443}
VNC_DISPLAY=${OUTBAND_VNC_DISPLAY:-77}
VNC_PORT=$((5900 + VNC_DISPLAY))

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "==> QEMU (the stand-in BMC) with VNC on 127.0.0.1:$VNC_PORT"
qemu-system-x86_64 -machine pc,accel=tcg -display none -m 64 -nodefaults -vga std \
  -vnc "127.0.0.1:$VNC_DISPLAY" -nic none -boot reboot-timeout=3000 \
  >"$RUN/qemu.log" 2>&1 &
pids+=($!)

echo "==> manager on http://$MGR_HTTP (SQLite in $RUN/manager-data)"
"$BIN/outband-manager" --data-dir "$RUN/manager-data" --listen "$MGR_HTTP" \
  >"$RUN/manager.log" 2>&1 &
pids+=($!)

echo "==> gateway: agents on $GW_AGENTS, operator API on http://$GW_HTTP"
rm -f "$RUN/gateway.ready"
"$BIN/outband-gateway" --agent-listen "$GW_AGENTS" --http-listen "$GW_HTTP" \
  --state-dir "$RUN/gateway-state" --ready-file "$RUN/gateway.ready" \
  >"$RUN/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$RUN/gateway.ready" ] && break; sleep 0.1; done
[ -s "$RUN/gateway.ready" ] || { tail "$RUN/gateway.log"; exit 1; }

echo "==> agent (dials out to the gateway, may reach only 127.0.0.1:$VNC_PORT)"
"$BIN/outband-agent" --gateway "$GW_AGENTS" --ca-file "$RUN/gateway-state/ca.pem" \
  --state-dir "$RUN/agent-state" --allow "vnc://127.0.0.1:$VNC_PORT" \
  >"$RUN/agent.log" 2>&1 &
pids+=($!)

agent_id=""
for _ in $(seq 100); do
  agent_id=$(curl -fsS "http://$GW_HTTP/api/v1/agents" 2>/dev/null |
    python3 -c 'import json,sys; a=json.load(sys.stdin); print(a[0]["agent_id"] if a else "")' || true)
  [ -n "$agent_id" ] && break
  sleep 0.1
done
[ -n "$agent_id" ] || { tail "$RUN/agent.log" "$RUN/gateway.log"; exit 1; }

relay=$(curl -fsS -X POST "http://$GW_HTTP/api/v1/relays" -H 'content-type: application/json' \
  -d "{\"agent_id\":\"$agent_id\",\"target\":\"vnc://127.0.0.1:$VNC_PORT\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"])')

cat <<MSG

outband is running.
  agent:          $agent_id
  operator page:  http://$GW_HTTP/          (connected agents; JSON at /api/v1/agents)
  metrics:        http://$GW_HTTP/metrics
  manager API:    http://$MGR_HTTP/api/v1/openapi.json  (first start prints the
                  admin@localhost one-time password to $RUN/manager.log; the
                  manager is not yet wired to the gateway)
  VNC console:    point any VNC viewer at ${relay} — it reaches the stand-in BMC
                  only through the agent's outbound tunnel.
  logs:           $RUN/*.log

Press Ctrl-C to stop.
MSG
wait
