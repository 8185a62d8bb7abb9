# Sourced by bench/snapshot-link.sh and bench/thin-client.sh: a network
# namespace joined to this one by a veth pair on a private /30, the link
# both benchmarks shape with tc. The caller names the pieces (NS, HOST_IF,
# NS_IF: unique per run, e.g. with $$) and the addresses (HOST_ADDR,
# NS_ADDR) before calling netns_link_up; netns_link_down belongs in its
# EXIT trap (it ignores what is already gone). Needs root.

# Creates NS and the veth pair HOST_IF (here, HOST_ADDR/30) <-> NS_IF (in
# NS, NS_ADDR/30), both up, and NS's loopback.
netns_link_up() {
  ip netns add "$NS"
  ip link add "$HOST_IF" type veth peer name "$NS_IF"
  ip link set "$NS_IF" netns "$NS"
  ip addr add "$HOST_ADDR/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip netns exec "$NS" ip addr add "$NS_ADDR/30" dev "$NS_IF"
  ip netns exec "$NS" ip link set "$NS_IF" up
  ip netns exec "$NS" ip link set lo up
}

# Removes the veth pair and the namespace.
netns_link_down() {
  ip link del "$HOST_IF" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
}
