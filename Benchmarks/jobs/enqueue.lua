-- wrk: one POST /api/v1/jobs per request (BENCH_TOKEN and BENCH_QUEUE from the environment).
wrk.method = "POST"
wrk.body = '{"task":"keel.noop","queue":"' .. os.getenv("BENCH_QUEUE") .. '"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
