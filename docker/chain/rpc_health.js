// Health probe for the chain container: exit 0 when the JSON-RPC endpoint answers eth_chainId, else 1.
//   node docker/rpc_health.js [url]        (default http://127.0.0.1:8545; Node >= 18 has a global fetch)
const url = process.argv[2] || process.env.RPC_HEALTH_URL || "http://127.0.0.1:8545";
const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] });
fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body, signal: AbortSignal.timeout(4000) })
  .then((res) => res.json())
  .then((reply) => {
    if (!reply.result) throw new Error(`no result: ${JSON.stringify(reply)}`);
    console.log(`chain health: ok (chainId ${Number(reply.result)})`);
  })
  .catch((err) => {
    console.log(`chain health: UNHEALTHY: ${url}: ${err.message || err}`);
    process.exitCode = 1;
  });
