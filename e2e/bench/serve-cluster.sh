# Sourced by the bench scripts that measure `sublet serve` rather than `sublet dev`: six
# `sublet-provider` processes (one zone each) and the file of a gateway on them.
# Needs: WORK (a directory), PROVIDER (the sublet-provider binary), PIDS (an array the
# caller's cleanup kills), log (a function).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listens on $1"; exit 1
}

# Starts providers p0..p5 under $WORK and sets POOLS (their ProviderPools) and TOKEN.
start_providers() {
    TOKEN=bench-cluster-token-$RANDOM$RANDOM
    POOLS=""
    local i dir node grpc
    for i in 0 1 2 3 4 5; do
        dir=$WORK/p$i
        mkdir -p "$dir"
        node=$("$PROVIDER" --data-dir "$dir" --print-node-id)
        grpc=$(free_port)
        RUST_LOG=warn "$PROVIDER" --data-dir "$dir" --listen "127.0.0.1:$grpc" \
            --http-listen "127.0.0.1:$(free_port)" --capacity 40Gi --token "$TOKEN" \
            >"$dir.log" 2>&1 </dev/null &
        PIDS+=($!)
        wait_port "$grpc"
        POOLS+="apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {name: p$i}
spec:
  class: owned
  endpoints: [{name: p$i, address: \"127.0.0.1:$grpc\", nodeId: \"$node\", zone: z$i}]
---
"
    done
}

# Writes DIR/sublet.yaml: the providers, an EC 4+2 plan (encrypted, 16 MiB segments; with
# INLINE_UP_TO set, e.g. 4Ki, objects up to that size in metadata) and a gateway on PORT
# (admin on ADMIN) keeping its data in DIR/data, key bench.
gateway_yaml() { # dir port admin
    mkdir -p "$1"
    cat >"$1/sublet.yaml" <<EOF
${POOLS}apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: standard}
spec:
  redundancy: {erasure: {dataShards: 4, parityShards: 2}}
${INLINE_UP_TO:+  inlineUpTo: $INLINE_UP_TO}
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {name: s3}
spec:
  defaultPlan: standard
  listen: "127.0.0.1:$2"
  adminListen: "127.0.0.1:$3"
  dataDir: "$1/data"
  providerToken: $TOKEN
  credentials: [{accessKey: bench, secretKey: bench-secret-0123456789}]
EOF
}
