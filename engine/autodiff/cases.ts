// Every gradcheck case, in one list: the CLI (`npm run gradcheck`) and the jest suite run it.

import { attentionCases } from './cases-attention';
import { activationCases, elementwiseCases, linalgCases, type OpCase } from './cases-core';
import { indexingCases, lossCases, miscCases, normCases, reduceCases, shapeCases } from './cases-more';
import { checkOp, type CheckResult } from './gradcheck';

export type { OpCase };

export const allCases: OpCase[] = [
  ...elementwiseCases,
  ...activationCases,
  ...linalgCases,
  ...shapeCases,
  ...indexingCases,
  ...reduceCases,
  ...normCases,
  ...lossCases,
  ...miscCases,
  ...attentionCases,
];

export function runCase(c: OpCase): Promise<CheckResult> {
  return checkOp(c.name, c.shapes, c.build, c.opts);
}
