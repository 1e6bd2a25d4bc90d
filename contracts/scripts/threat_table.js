// Prints the threat table of docs/economy.md for a job's rates and stakes (no chain needed).
//
//   node scripts/threat_table.js            or   hardhat run scripts/threat_table.js
//   env: SHARE (attacker's share of validator stake, default 1/3), POOL (validators, default 100),
//        MAX_WORK_UNITS, BASE_RATE, BONUS_RATE, TASKS (per round), VALIDATOR_SLASH, MIN_UPDATE_BOND (ether)
//
// Model: panels are stake-weighted draws, approximated as independent draws where each seat is the attacker's
// with probability SHARE (exact for the first panel's "all seats" term up to sampling without replacement, which
// only lowers it). A fabricated update is accepted when the attacker fills the whole first panel, or when the
// first panel splits and the attacker holds more than half of the escalation panel; an honest update is rejected
// by the same two events with the attacker voting "invalid".
const SHARE = Number(process.env.SHARE || 1 / 3);
const POOL = Number(process.env.POOL || 100);
const ESCALATION_PANEL = 63;
const SLASH_MULTIPLE = 3;
const num = (k, d) => Number(process.env[k] || d);
const units = num("MAX_WORK_UNITS", 100);
const base = num("BASE_RATE", 0.0001);
const bonus = num("BONUS_RATE", 0.00005);
const tasks = num("TASKS", 4);
const validatorSlash = num("VALIDATOR_SLASH", 0.05);
const minBond = num("MIN_UPDATE_BOND", 0.01);

function binomTail(n, p, atLeast) {
  let sum = 0;
  let c = 1; // C(n, k)
  for (let k = 0; k <= n; k++) {
    if (k > 0) c = (c * (n - k + 1)) / k;
    if (k >= atLeast) sum += c * p ** k * (1 - p) ** (n - k);
  }
  return sum;
}

const e = Math.min(ESCALATION_PANEL, POOL - 1);
const escalationWin = binomTail(e, SHARE, Math.floor(e / 2) + 1);
const maxPay = units * (base + bonus * tasks);
const bond = Math.max(minBond, SLASH_MULTIPLE * maxPay);
console.log(`attacker share ${SHARE.toFixed(3)}, pool ${POOL}, escalation panel ${e}: attacker wins an escalation with p = ${(100 * escalationWin).toFixed(3)} %`);
console.log(`max pay per update ${maxPay} ETH, update bond ${bond} ETH, validator slash ${validatorSlash} ETH`);
console.log("| quorum | P(fabricated accepted) | P(honest rejected) | trainer EV of a fabricated update (ETH) | lying validator EV per escalation (ETH) |");
console.log("|---:|---:|---:|---:|---:|");
for (const q of [1, 3, 5, 7]) {
  const all = SHARE ** q;
  const split = 1 - all - (1 - SHARE) ** q;
  const p = all + split * escalationWin;
  const ev = p * maxPay - (1 - p) * bond;
  const liar = -(1 - escalationWin) * validatorSlash * 2; // slashed in both panels when it loses
  console.log(`| ${q} | ${(100 * p).toFixed(3)} % | ${(100 * p).toFixed(3)} % | ${ev.toFixed(5)} | ${liar.toFixed(4)} |`);
}
