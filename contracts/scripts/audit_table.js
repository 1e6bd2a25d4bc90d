// Prints the audit rows of the threat model (docs/economy.md, docs/protocol.md) for a given attacker share, pool
// and slash (no chain needed).
//
//   node scripts/audit_table.js
//   env: SHARE (attacker's share of validator stake, default 1/3), POOL (validators that may audit, i.e. the pool
//        without the committer, default 99), VALIDATOR_SLASH and LEADER_BOND (ether, defaults: the demo's 0.01)
//
// Rules (JobManagerExtension: drawAuditors / auditRound): a first panel of min(AUDIT_PANEL, POOL) validators drawn
// by stake settles only when unanimous; any split (or silence past its window) escalates to a fresh draw of
// min(ESCALATION_PANEL, POOL) validators whose stake majority settles; every voter on the losing side of a settled
// verdict loses validatorSlash. An attacker disputes an honest round when it fills the whole first panel (and votes
// "failed"), or when it wins the escalation; a dishonest round (the attacker's leader) survives by the same two
// events with the attacker voting "ok". Two models: "binomial" (each seat is the attacker's with probability SHARE:
// the large-pool limit, and an upper bound for draws without replacement) and "exact" (POOL validators of equal
// stake, round(SHARE x POOL) of them the attacker's, drawn without replacement as the contract does).
const SHARE = Number(process.env.SHARE || 1 / 3);
const POOL = Number(process.env.POOL || 99);
const SLASH = Number(process.env.VALIDATOR_SLASH || 0.01);
const BOND = Number(process.env.LEADER_BOND || 0.01);
const AUDIT_PANEL = 7;
const ESCALATION_PANEL = 63;

const logFact = [0];
for (let i = 1; i <= 2048; i++) logFact[i] = logFact[i - 1] + Math.log(i);
const logChoose = (n, k) => (k < 0 || k > n ? -Infinity : logFact[n] - logFact[k] - logFact[n - k]);

// P(the attacker holds at least `atLeast` of `n` seats).
function binomTail(n, p, atLeast) {
  let sum = 0;
  for (let k = atLeast; k <= n; k++) sum += Math.exp(logChoose(n, k) + k * Math.log(p) + (n - k) * Math.log(1 - p));
  return sum;
}
function hyperTail(N, K, n, atLeast) {
  let sum = 0;
  for (let k = atLeast; k <= n; k++) sum += Math.exp(logChoose(K, k) + logChoose(N - K, n - k) - logChoose(N, n));
  return sum;
}

function row(model, a) {
  const panel = Math.min(a, POOL);
  const esc = Math.min(ESCALATION_PANEL, POOL);
  const K = Math.round(SHARE * POOL);
  const tail = (n, atLeast) => (model === "binomial" ? binomTail(n, SHARE, atLeast) : hyperTail(POOL, K, n, atLeast));
  const all = tail(panel, panel); // the attacker fills the first panel
  const none = model === "binomial" ? (1 - SHARE) ** panel : Math.exp(logChoose(POOL - K, panel) - logChoose(POOL, panel));
  const mixed = 1 - all - none;
  // Stake majority of the escalation: more than half its seats (equal stakes in "exact"; the binomial seat model).
  const escWin = tail(esc, Math.floor(esc / 2) + 1);
  const p = all + mixed * escWin;
  // Expected attacker seats at risk per attacked round: its first-panel seats when the panel is mixed, and its
  // escalation seats; each is slashed unless the escalation is won.
  const seatsFirst = panel * (model === "binomial" ? SHARE : K / POOL) - panel * all;
  const seatsEsc = mixed * esc * (model === "binomial" ? SHARE : K / POOL);
  const cost = (seatsFirst + seatsEsc) * (1 - escWin) * SLASH;
  return { panel, esc, all, escWin, p, cost, perSuccess: cost / p };
}

const pct = (x) => (x > 0 && x < 1e-5 ? `${(100 * x).toExponential(1)} %` : `${(100 * x).toFixed(3)} %`);
console.log(`attacker share ${SHARE.toFixed(3)}, ${POOL} validators may audit, validatorSlash ${SLASH} ETH, leader bond ${BOND} ETH`);
console.log("| model | first panel | escalation | P(attacker fills the first panel) | P(attacker wins an escalation) | P(honest leader disputed) = P(dishonest round survives) | attacker's expected slash per attacked round (ETH) | per successful dispute (ETH) |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const model of ["binomial", "exact"]) {
  for (const a of [3, 5, AUDIT_PANEL]) {
    const r = row(model, a);
    const mark = a === AUDIT_PANEL ? " (AUDIT_PANEL)" : "";
    console.log(`| ${model} | ${r.panel}${mark} | ${r.esc} | ${pct(r.all)} | ${pct(r.escWin)} | ${pct(r.p)} | ${r.cost.toFixed(4)} | ${r.perSuccess.toFixed(2)} |`);
  }
}
