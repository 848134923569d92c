# Sourced by the bench scripts that measure one `sublet dev` (gateway and its six providers
# in one process): starting it on free ports and reading its keys.
# Needs: WORK (a directory), SUBLET (the sublet binary), log (a function). Sets DEV (its pid,
# for the caller's cleanup and /proc), PORT (S3), ADMIN (metrics and the admin API), AK, SK.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts `sublet dev` in $WORK/dev (output in $WORK/dev.out and dev.log) and waits until its
# S3 port answers; exits with the end of its log if it dies first.
start_dev() {
    PORT=$(free_port)
    ADMIN=$(free_port)
    "$SUBLET" dev --dir "$WORK/dev" --listen "127.0.0.1:$PORT" \
        --admin-listen "127.0.0.1:$ADMIN" >"$WORK/dev.out" 2>"$WORK/dev.log" </dev/null &
    DEV=$!
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        kill -0 "$DEV" || { tail "$WORK/dev.log" >&2; exit 1; }
        sleep 0.1
    done
    AK=$(sed -n 's/^access_key=//p' "$WORK/dev/credentials")
    SK=$(sed -n 's/^secret_key=//p' "$WORK/dev/credentials")
}
