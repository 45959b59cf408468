-- wrk script of bench/peers.py (workload post-256k): every request is a POST of 256 KiB to the
-- echo app, which sends the body back.
wrk.method = "POST"
wrk.body = string.rep("p", 262144)
wrk.headers["Content-Type"] = "application/octet-stream"
