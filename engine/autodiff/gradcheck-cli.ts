// `npm run gradcheck`: checks every rule's forward against its TS reference and its gradient
// against central finite differences; prints one line per case, then "N passed, M failed".
// Optional argument: a substring to run only matching cases (`npm run gradcheck -- Gather`).

import { allCases, runCase } from './cases';

function fmt(x: number | undefined): string {
  return x === undefined ? '-' : x.toExponential(3);
}

async function main(): Promise<void> {
  const filter = process.argv[2];
  const cases = filter ? allCases.filter((c) => c.name.includes(filter) || c.op === filter) : allCases;
  let passed = 0;
  let failed = 0;
  const ops = new Set<string>();
  for (const c of cases) {
    const r = await runCase(c);
    if (r.ok) {
      passed++;
      ops.add(c.op);
    } else failed++;
    const detail = `fwd_err=${fmt(r.forwardErr)} grad_err=${fmt(r.gradErr)} ad=${fmt(r.ad)} fd=${fmt(r.fd)} |ad-fd|=${fmt(r.ad === undefined || r.fd === undefined ? undefined : Math.abs(r.ad - r.fd))}`;
    console.log(`${r.ok ? 'PASS' : 'FAIL'}  ${c.op.padEnd(24)} ${c.name.padEnd(58)} ${detail}${r.message ? `  ${r.message}` : ''}`);
  }
  console.log(`ops covered: ${ops.size} (${[...ops].sort().join(', ')})`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed > 0 ? 1 : 0;
}

void main();
