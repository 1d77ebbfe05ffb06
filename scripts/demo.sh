#!/usr/bin/env bash
# The README's first command: sets up a fresh machine and runs a local outband stack
# on embedded defaults — a stand-in BMC (QEMU for the graphical console and the serial
# port, password-protected VNC; OpenIPMI's ipmi_sim for IPMI power and SOL), a
# manager, a gateway, and an agent that dials out to it — then keeps it running until
# Ctrl-C.
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
VNC_PASSWORD=demo-vnc
SERIAL_PORT=${OUTBAND_SERIAL_PORT:-17577}
IPMI_PORT=${OUTBAND_IPMI_PORT:-17623}

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "==> QEMU (the stand-in server) with VNC on 127.0.0.1:$VNC_PORT (password $VNC_PASSWORD)"
qemu-system-x86_64 -machine pc,accel=tcg,graphics=off -display none -m 64 -nodefaults \
  -vga std -object "secret,id=vncpw,data=$VNC_PASSWORD" \
  -vnc "127.0.0.1:$VNC_DISPLAY,password-secret=vncpw" \
  -chardev "socket,id=s0,host=127.0.0.1,port=$SERIAL_PORT,server=on,wait=off" \
  -serial chardev:s0 -nic none -boot reboot-timeout=3000 \
  >"$RUN/qemu.log" 2>&1 &
pids+=($!)

echo "==> ipmi_sim (IPMI 2.0 BMC) on udp 127.0.0.1:$IPMI_PORT, SOL = QEMU's serial port"
mkdir -p "$RUN/ipmi"
rm -rf "$RUN/ipmi/state" && mkdir -p "$RUN/ipmi/state"
cat >"$RUN/ipmi/chassis.sh" <<SH
#!/bin/sh
# ipmi_sim's chassis control: "get power" or "set power 0|1" / "set reset 1".
if [ "\$1" = get ]; then echo "power:\$(cat '$RUN/ipmi/power' 2>/dev/null || echo 1)"; exit 0; fi
[ "\$2" = power ] && echo "\$3" > '$RUN/ipmi/power'
exit 0
SH
chmod 755 "$RUN/ipmi/chassis.sh"
cat >"$RUN/ipmi/lan.conf" <<CONF
name "demobmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $IPMI_PORT
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "$RUN/ipmi/chassis.sh"
  sol "tcp:127.0.0.1:$SERIAL_PORT" 115200
  user 2 true "admin" "password" admin 10 none md2 md5 straight
CONF
cat >"$RUN/ipmi/sim.emu" <<EMU
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
EMU
ipmi_sim -c "$RUN/ipmi/lan.conf" -f "$RUN/ipmi/sim.emu" -s "$RUN/ipmi/state" -n \
  >"$RUN/ipmi_sim.log" 2>&1 &
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

echo "==> agent (dials out to the gateway, may reach only the stand-in BMC)"
"$BIN/outband-agent" --gateway "$GW_AGENTS" --ca-file "$RUN/gateway-state/ca.pem" \
  --state-dir "$RUN/agent-state" --allow "vnc://127.0.0.1:$VNC_PORT" \
  --allow "ipmi://127.0.0.1:$IPMI_PORT" \
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

relay() {
  curl -fsS -X POST "http://$GW_HTTP/api/v1/relays" -H 'content-type: application/json' -d "$1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"])'
}
IPMI_AUTH='{"username":"admin","password":"password"}'
vnc_relay=$(relay "{\"agent_id\":\"$agent_id\",\"target\":\"vnc://127.0.0.1:$VNC_PORT\",\"kind\":\"vnc\",\"auth\":{\"username\":\"\",\"password\":\"$VNC_PASSWORD\"}}")
sol_relay=$(relay "{\"agent_id\":\"$agent_id\",\"target\":\"ipmi://127.0.0.1:$IPMI_PORT\",\"kind\":\"serial\",\"auth\":$IPMI_AUTH}")
POWER_URL="http://$GW_HTTP/api/v1/agents/$agent_id/power"

cat <<MSG

outband is running.
  agent:          $agent_id
  operator page:  http://$GW_HTTP/          (connected agents; JSON at /api/v1/agents)
  metrics:        http://$GW_HTTP/metrics
  manager API:    http://$MGR_HTTP/api/v1/openapi.json  (first start prints the
                  admin@localhost one-time password to $RUN/manager.log; in this
                  demo the gateway runs standalone, not registered with the manager)
  VNC console:    point any VNC viewer at ${vnc_relay} (no password: the agent
                  logs in to the BMC's VNC server itself, through its outbound tunnel)
  serial console: socat -,raw,echo=0 TCP:${sol_relay}   (IPMI SOL: QEMU's serial port
                  behind ipmi_sim; Ctrl-C to leave)
  power:          curl -sS -X POST $POWER_URL \\
                    -H 'content-type: application/json' \\
                    -d '{"endpoint":"ipmi://127.0.0.1:$IPMI_PORT","auth":$IPMI_AUTH,"action":"status"}'
                  (actions: status on off cycle reset soft_off)
  logs:           $RUN/*.log

Press Ctrl-C to stop.
MSG
wait
