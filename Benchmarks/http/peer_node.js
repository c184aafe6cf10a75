// Node.js standard-library peer for the HTTP benchmark: the same two bodies Keel serves.
const http = require("http");
const status = Buffer.from(process.env.BENCH_STATUS_BODY);
const health = Buffer.from('{"status":"ok"}');
http.createServer((req, res) => {
  const body = req.url === "/healthz" ? health : req.url === "/api/v1/status" ? status : null;
  if (!body) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
  res.end(body);
}).listen(Number(process.env.PORT), "127.0.0.1");
