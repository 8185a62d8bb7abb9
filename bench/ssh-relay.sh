#!/bin/sh
# SSH agent forwarding cost: N `ssh-add -l` in one RUN --mount=type=ssh step
# of `rbk build --ssh default` (relayed worker -> coordinator -> client ->
# agent over loopback gRPC), against the same N on the host, and against N
# execs of ssh-add in the step that never reach an agent.
#   RBK=target/release/rbk N=300 bench/ssh-relay.sh
# Needs root, runc (RBK_TEST_BIN_RUNC or PATH), busybox (RBK_TEST_BIN_BUSYBOX
# or PATH), ssh-agent/ssh-add/ssh-keygen.
set -eu
RBK=${RBK:-target/release/rbk}
N=${N:-300}
RUNC=${RBK_TEST_BIN_RUNC:-$(command -v runc)}
BUSYBOX=${RBK_TEST_BIN_BUSYBOX:-$(command -v busybox)}
dir=$(mktemp -d /tmp/rbk-ssh-relay-XXXXXX)
trap 'kill "${SSH_AGENT_PID:-0}" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/ctx/sshroot/usr/bin"
cp "$BUSYBOX" "$dir/ctx/busybox"
cp /usr/bin/ssh-add "$dir/ctx/sshroot/usr/bin/"
for lib in $(ldd /usr/bin/ssh-add | grep -o '/[^ ]*'); do
  mkdir -p "$dir/ctx/sshroot$(dirname "$lib")"
  cp -L "$lib" "$dir/ctx/sshroot$lib"
done
cat > "$dir/ctx/Dockerfile" <<DF
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY sshroot/ /
RUN --mount=type=ssh,required=true sh -c 'echo in-step exec only:; time sh -c "i=0; while [ \\\$i -lt $N ]; do SSH_AUTH_SOCK=/none ssh-add -l 2>/dev/null; i=\\\$((i+1)); done"; echo in-step relayed:; time sh -c "i=0; while [ \\\$i -lt $N ]; do ssh-add -l >/dev/null || exit 1; i=\\\$((i+1)); done"'
DF
ssh-keygen -q -t ed25519 -N "" -f "$dir/key"
eval "$(ssh-agent -s)" >/dev/null
ssh-add -q "$dir/key"
a=$(date +%s%N); i=0
while [ $i -lt "$N" ]; do ssh-add -l >/dev/null; i=$((i+1)); done
b=$(date +%s%N)
echo "N=$N host direct: $(( (b-a)/1000000 )) ms"
"$RBK" build --state-dir "$dir/state" --runtime-path "$RUNC" --progress=plain --ssh default "$dir/ctx" 2>&1 \
  | grep -E 'in-step|real' | grep -v 'RUN --mount' | sed 's/^#[0-9]* [0-9.]* //'
